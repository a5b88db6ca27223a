"""Who drives the camera in rendered video: (v m/s, omega rad/s) from the pose and the depth image.

- :class:`RouteDriver`: the wheeled scripted expert's route (``WheeledExpert``) to a goal room at a chosen
  top speed, then on to another room, and so on; with ``noise`` an Ornstein-Uhlenbeck perturbation of speed
  and turn rate (as DART in ``WheeledExpert.record``) makes it weave and correct.
- :class:`Explorer`: random wandering (a slowly varying turn rate) that turns on the spot, toward the more
  open side, when the depth image shows a wall ahead; it needs no map, so it drives any scene.
- :class:`Pauses`: wraps a driver with stops and turns on the spot of 0.5-3 s at random times.

Every driver is seeded by the ``rng`` it is given, so an episode is a function of its seed.
"""
from __future__ import annotations

import numpy as np

from components.envs.wheeled_expert import WheeledExpert
from components.kinematics import WHEELED_BASE


class OrnsteinUhlenbeck:
    """A mean-reverting unit-variance noise of ``dims`` channels (correlation ``theta`` per step)."""

    def __init__(self, rng: np.random.Generator, dims: int, theta: float = 0.15):
        self.rng, self.theta, self.value = rng, theta, np.zeros(dims)

    def __call__(self) -> np.ndarray:
        self.value += -self.theta * self.value + np.sqrt(1 - (1 - self.theta) ** 2) * self.rng.normal(0, 1, len(self.value))
        return self.value


class RouteDriver:
    """The scripted expert's shortest room/door route to a random goal room, re-planned to a new one on arrival."""

    def __init__(self, scene, rng: np.random.Generator, speed: float, noise: float = 0.0, arrive_m: float = 0.5):
        self.scene, self.rng, self.noise, self.arrive_m = scene, rng, noise, arrive_m
        self.expert = WheeledExpert(scene.plan, v_max=speed)
        self.ou = OrnsteinUhlenbeck(rng, 2)
        u = scene.env
        self.goal = u.goal_room
        self.expert.reset(scene.pose, u.plan.room_at(*scene.pose[:2]) or u.start_room, self.goal,
                          closed=u.closed_doors)

    def _next_goal(self, pose) -> None:
        here = self.scene.plan.room_at(*pose[:2]) or self.goal
        others = [n for n in self.scene.plan.room_names if n != here] or [here]
        self.goal = others[int(self.rng.integers(len(others)))]
        self.expert.reset(pose, here, self.goal, closed=self.scene.env.closed_doors)

    def __call__(self, pose: np.ndarray, depth: np.ndarray) -> tuple[float, float]:
        if np.linalg.norm(self.expert.path[-1] - pose[:2]) < self.arrive_m:
            self._next_goal(pose)
        v, w = self.expert.act(pose)
        if self.noise:
            ou = self.ou()
            v, w = v + 0.3 * self.noise * ou[0], w + self.noise * WHEELED_BASE.w_max * ou[1]
        return float(v), float(w)


class Explorer:
    """Wander at about ``speed`` with a slowly varying turn rate; when the middle of the depth image is nearer
    than ``clearance_m`` (plus the distance covered in 0.5 s), turn on the spot toward the more open half
    until 1.5 times that is clear, and a random extra 0.2-1.5 s."""

    def __init__(self, rng: np.random.Generator, speed: float, clearance_m: float = 0.6, turn_rate: float = 0.5):
        self.rng, self.speed, self.clearance_m, self.turn_rate = rng, speed, clearance_m, turn_rate
        self.ou = OrnsteinUhlenbeck(rng, 2, theta=0.05)
        self.turning = 0.0   # rad/s while turning away from a wall
        self.extra_steps = 0

    def __call__(self, pose: np.ndarray, depth: np.ndarray) -> tuple[float, float]:
        h, w = depth.shape
        band = depth[h // 3: 2 * h // 3]
        ahead = float(band[:, w // 3: 2 * w // 3].min())
        near = self.clearance_m + 0.5 * self.speed
        blocked = ahead < (1.5 * near if self.turning else near)
        if blocked and not self.turning:
            left, right = band[:, : w // 2].mean(), band[:, w // 2:].mean()
            self.turning = WHEELED_BASE.w_max * self.rng.uniform(0.5, 1.0) * (1 if left >= right else -1)
            self.extra_steps = int(self.rng.uniform(0.2, 1.5) / WHEELED_BASE.dt_s)
        if self.turning:
            if not blocked:
                self.extra_steps -= 1
                if self.extra_steps <= 0:
                    self.turning = 0.0
            return 0.0, self.turning
        ou = self.ou()
        return float(self.speed * np.clip(0.8 + 0.2 * ou[0], 0.3, 1.0)), float(self.turn_rate * ou[1])


class Pauses:
    """``driver`` with pauses: each step starts one with probability ``rate``, lasting 0.5-3 s, half of them
    a stop and half a turn on the spot (0.4-1.2 rad/s either way); the driver is not asked during a pause."""

    def __init__(self, driver, rng: np.random.Generator, rate: float = 0.01):
        self.driver, self.rng, self.rate = driver, rng, rate
        self.left, self.command = 0, (0.0, 0.0)

    def __call__(self, pose: np.ndarray, depth: np.ndarray) -> tuple[float, float]:
        if self.left == 0 and self.rng.uniform() < self.rate:
            self.left = int(self.rng.uniform(0.5, 3.0) / WHEELED_BASE.dt_s)
            spin = self.rng.uniform() < 0.5
            self.command = (0.0, float(self.rng.choice([-1, 1]) * self.rng.uniform(0.4, 1.2)) if spin else 0.0)
        if self.left > 0:
            self.left -= 1
            return self.command
        return self.driver(pose, depth)
