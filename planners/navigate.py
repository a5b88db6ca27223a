"""Following a route of (x, z) subgoals in the wheeled env, with blocked-segment detection and replanning.

:func:`follow_route` drives from the robot's pose through ``subgoals`` (the nodes of a route, e.g. a
navigation graph's) with one of two local planners:

* follower-only (``decider=None``): the scripted expert's pure pursuit along the subgoal polyline
  (``components.kinematics.advance_segment`` / ``polyline_command``);
* a :class:`WaypointDecider` (the VLA later): given the observation and the current subgoal in the robot
  frame, it returns waypoints ``[N, 2+]`` that :class:`~planners.follower.WaypointFollower` turns into
  (v, omega) for ``execute_steps`` env steps. :class:`StraightLineDecider` is the geometric baseline.

Segment ``i`` runs from subgoal ``i - 1`` (for ``i = 0``: where the route started) to subgoal ``i``. It is
*blocked* when, while driving it, (a) the best distance to subgoal ``i`` has not shrunk by
``min_progress_m`` for ``stall_steps`` steps, (b) ``max_collisions`` of the last ``collision_window``
steps collided, or (c) the depth image, in the direction of the subgoal while facing it, shows an
obstacle nearer than ``obstacle_m`` with the subgoal beyond it for ``obstacle_steps`` steps (a closed
door). The caller's ``replan(pose, blocked)`` then returns new subgoals from the current pose (having
blocked that edge in its graph) and the episode goes on; None or [] ends it as blocked. In decider mode
``recovery_steps`` > 0 first answers a collision block with that many steps of pure pursuit back onto the
route's line (once per segment); only a second one blocks the edge.
docs/ARCHITECTURE.md, Navigation.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np

from components.errors import UsageError
from components.kinematics import (
    LOOKAHEAD_M,
    WHEELED_BASE,
    advance_segment,
    bearing,
    polyline_command,
    subgoal_features,
    to_robot_frame,
)
from planners.episode import policy_seed
from planners.follower import FollowerConfig, WaypointFollower


@dataclass
class RouteConfig:
    """Tolerances and blocked-segment thresholds of :func:`follow_route`."""
    subgoal_tolerance_m: float = 0.5   # an intermediate subgoal is passed this close (or by projection)
    goal_tolerance_m: float = 0.35     # the last subgoal is reached this close
    stall_steps: int = 40              # (a) no progress for this many steps ...
    min_progress_m: float = 0.25       # ... progress = the best distance to the subgoal shrinking by this
    collision_window: int = 20         # (b) steps looked back at ...
    max_collisions: int = 10           # ... this many of them collided
    obstacle_m: float = 0.6            # (c) depth toward the subgoal nearer than this ...
    obstacle_steps: int = 3            # ... for this many consecutive steps, while facing the subgoal
    facing_rad: float = 0.35           # "facing": |bearing of the subgoal| below this
    max_replans: int = 3
    max_steps: int | None = None       # None: until the env truncates
    execute_steps: int = 5             # decider mode: env steps per waypoint chunk (one 0.5 s spacing)
    recovery_steps: int = 0            # decider mode: on a collision block, pure pursuit this many steps first
    lookahead_m: float = LOOKAHEAD_M   # follower mode
    v_max: float = WHEELED_BASE.v_max  # follower mode


@dataclass
class BlockedSegment:
    """Where a route got blocked: driving from ``start`` to subgoal ``index`` (= ``end``) of that route."""
    index: int
    start: tuple[float, float]
    end: tuple[float, float]
    reason: str                        # "no_progress" | "collisions" | "obstacle"
    step: int                          # env steps into follow_route when it was detected
    pose: tuple[float, float, float]   # (x, z, yaw) then


@dataclass
class RouteResult:
    """``status``: "reached" (the last subgoal, or the env reported success), "blocked" (``blocked`` says
    where; replanning gave up or was not offered) or "timeout" (``max_steps`` or the env's own limit)."""
    status: str
    steps: int
    path_length_m: float
    collisions: int                    # env steps with ``info["collided"]``
    replans: int
    success: bool                      # the env's ``info["is_success"]`` at the end
    subgoals_reached: int              # of the route being followed at the end
    final_pose: tuple[float, float, float]
    blocked: BlockedSegment | None = None
    blocked_history: list[BlockedSegment] = field(default_factory=list)  # every detection, in order
    obs: dict | None = field(default=None, repr=False)   # the last observation and info, to go on from
    info: dict | None = field(default=None, repr=False)
    recoveries: int = 0                # decider mode: collision blocks handed to pure pursuit first
    recovery_steps: int = 0            # env steps pure pursuit drove in those recoveries

    def to_dict(self) -> dict:
        """JSON-ready summary (without ``obs``/``info``)."""
        d = asdict(self)
        d.pop("obs"), d.pop("info")
        return d


class WaypointDecider(Protocol):
    def waypoints(self, obs: dict, subgoal: np.ndarray) -> np.ndarray:
        """Waypoints ``[N, 2+]`` (x_forward, y_left, ...) in the robot frame toward ``subgoal`` [2]
        = (x_forward, y_left) m of the current subgoal in the robot frame."""


class StraightLineDecider:
    """Waypoints on the straight line to the subgoal at ``speed`` (m/s), one every ``spacing_s``, stopping
    at it; headings along the line. The geometric baseline of the decider hook (no learning, no map)."""

    def __init__(self, num: int = 8, spacing_s: float = 0.5, speed: float = 0.6):
        self.num, self.spacing_s, self.speed = num, spacing_s, speed

    def waypoints(self, obs: dict, subgoal: np.ndarray) -> np.ndarray:
        g = np.asarray(subgoal, dtype=np.float64)
        dist = float(np.linalg.norm(g))
        u = g / dist if dist > 1e-9 else np.array([1.0, 0.0])
        s = np.minimum(np.arange(1, self.num + 1) * self.speed * self.spacing_s, dist)
        heading = math.atan2(u[1], u[0])
        return np.stack([s * u[0], s * u[1], np.full_like(s, math.cos(heading)),
                         np.full_like(s, math.sin(heading))], axis=1)


class PolicyWaypointDecider:
    """The VLA as the local planner (``vla-stack nav --mode graph+vla``): the 8 waypoints of one policy
    sample for the ``wheeled_nav`` embodiment, whose state is the last (v, omega) plus the subgoal
    (``components.kinematics.subgoal_features``). Noise is seeded per call from ``episode_seed``."""

    def __init__(self, policy, instruction: str, episode_seed: int, embodiment: str = "wheeled_nav",
                 num_flow_steps: int | None = None):
        self.policy, self.instruction, self.embodiment = policy, instruction, embodiment
        self.episode_seed, self.calls, self.num_flow_steps = episode_seed, 0, num_flow_steps
        self.policy_ms: list[float] = []

    def waypoints(self, obs: dict, subgoal: np.ndarray) -> np.ndarray:
        state = np.concatenate([np.asarray(obs["state"], dtype=np.float32)[:2], subgoal_features(subgoal)])
        t0 = time.perf_counter()
        out = self.policy.sample_limited({"images": obs["images"], "state": state}, self.embodiment, self.instruction,
                                         num_samples=1, num_steps=self.num_flow_steps,
                                         seed=policy_seed(self.episode_seed, self.calls))
        self.policy_ms.append((time.perf_counter() - t0) * 1e3)
        self.calls += 1
        return out.chunks[0]


def depth_toward(depth: np.ndarray, bearing_rad: float, fov_y_deg: float) -> float | None:
    """Nearest depth (m) in a small window of the depth image around the horizon in the direction
    ``bearing_rad`` (positive = left); None when that direction is outside the camera's view."""
    h, w = depth.shape
    half_x = math.atan(math.tan(math.radians(fov_y_deg) / 2.0) * w / h)
    if abs(bearing_rad) >= half_x:
        return None
    col = int(round((w / 2.0) * (1.0 - math.tan(bearing_rad) / math.tan(half_x))))
    dc, dr = max(1, w // 16), max(1, h // 10)
    patch = depth[h // 2 - dr:h // 2 + dr, max(0, col - dc):min(w, col + dc + 1)]
    return float(patch.min()) if patch.size else None


class _BlockMonitor:
    """The three blocked-segment tests of the module docstring, on one segment."""

    def __init__(self, cfg: RouteConfig):
        self.cfg = cfg
        self.reset()

    def reset(self) -> None:
        self.best = math.inf
        self.since_progress = 0
        self.collided: deque[bool] = deque(maxlen=self.cfg.collision_window)
        self.obstacle_run = 0

    def update(self, dist: float, collided: bool, obstacle: bool) -> str | None:
        c = self.cfg
        if dist < self.best - c.min_progress_m or self.best == math.inf:
            self.best, self.since_progress = dist, 0
        else:
            self.since_progress += 1
        self.collided.append(bool(collided))
        self.obstacle_run = self.obstacle_run + 1 if obstacle else 0
        if self.obstacle_run >= c.obstacle_steps:
            return "obstacle"
        if sum(self.collided) >= c.max_collisions:
            return "collisions"
        if self.since_progress >= c.stall_steps:
            return "no_progress"
        return None


def _route(subgoals, where: str) -> list[np.ndarray]:
    pts = np.asarray(subgoals, dtype=np.float64) if len(subgoals) else np.zeros((0, 2))
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
        raise UsageError(f"{where}: subgoals must be a non-empty list of (x, z) points, got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise UsageError(f"{where}: subgoals contain NaN/inf")
    return list(pts)


Replan = Callable[[np.ndarray, BlockedSegment], Sequence[Sequence[float]] | None]


def follow_route(env, subgoals: Sequence[Sequence[float]], obs: dict, info: dict, *,
                 decider: WaypointDecider | None = None, replan: Replan | None = None,
                 config: RouteConfig | None = None, follower: FollowerConfig | None = None) -> RouteResult:
    """Drive ``env`` (a wheeled env, already reset: ``obs``/``info`` are its latest) through ``subgoals``.

    ``decider`` None: follower-only pure pursuit; else waypoints from it (module docstring).
    ``replan(pose (x, z, yaw), blocked) -> new subgoals | None`` is asked on every blocked segment,
    at most ``config.max_replans`` times.
    """
    cfg = config or RouteConfig()
    route = _route(subgoals, "follow_route")
    fov_y = float(getattr(getattr(env.unwrapped, "agent", None), "cam_fov_y", 60.0))
    tracker = WaypointFollower(follower or FollowerConfig(dt_s=float(getattr(env.unwrapped, "dt", WHEELED_BASE.dt_s))))
    monitor = _BlockMonitor(cfg)
    pose = np.asarray(info["pose"], dtype=np.float64)
    points, seg = [pose[:2].copy()] + route, 0
    steps = collisions = replans = 0
    chunk_left = recover_left = recoveries = recovery_driven = 0
    recovered_seg = -1
    length = 0.0
    history: list[BlockedSegment] = []

    def result(status: str, blocked: BlockedSegment | None = None) -> RouteResult:
        return RouteResult(status, steps, length, collisions, replans, bool(info.get("is_success", False)),
                           seg, tuple(float(v) for v in pose), blocked, history, obs, info, recoveries=recoveries,
                           recovery_steps=recovery_driven)

    while True:
        pose = np.asarray(info["pose"], dtype=np.float64)
        p = pose[:2]
        new_seg = advance_segment(points, seg, p, reach_m=cfg.subgoal_tolerance_m)
        if new_seg != seg:
            seg, chunk_left = new_seg, 0
            monitor.reset()
        target = points[seg + 1]
        dist = float(np.linalg.norm(target - p))
        at_end = seg == len(points) - 2 and dist < cfg.goal_tolerance_m
        if at_end or info.get("is_success"):
            seg += int(at_end)
            return result("reached")
        if cfg.max_steps is not None and steps >= cfg.max_steps:
            return result("timeout")

        if steps:  # judge the segment on what the last step showed
            b = bearing(target, pose, frame="xz")
            ahead = depth_toward(obs["depth"], b, fov_y) if abs(b) < cfg.facing_rad else None
            forward = float(to_robot_frame(target, pose, "xz")[0])
            obstacle = ahead is not None and ahead < cfg.obstacle_m and forward > ahead + 0.3
            reason = monitor.update(dist, bool(info.get("collided", False)), obstacle)
            if (reason == "collisions" and decider is not None and cfg.recovery_steps > 0
                    and recovered_seg != seg):  # once per segment: pure pursuit back onto the route's line
                recovered_seg, recover_left, chunk_left = seg, cfg.recovery_steps, 0
                recoveries += 1
                monitor.reset()
                reason = None
            if reason is not None:
                blocked = BlockedSegment(seg, tuple(float(v) for v in points[seg]), tuple(float(v) for v in target),
                                         reason, steps, tuple(float(v) for v in pose))
                history.append(blocked)
                new = replan(pose.copy(), blocked) if replan is not None and replans < cfg.max_replans else None
                if new is None or len(new) == 0:
                    return result("blocked", blocked)
                replans += 1
                route = _route(new, "replan")
                points, seg, chunk_left = [p.copy()] + route, 0, 0
                recovered_seg = -1
                monitor.reset()
                continue

        if decider is None or recover_left > 0:
            recovery_driven += int(recover_left > 0)
            recover_left = max(0, recover_left - 1)
            cmd = np.array(polyline_command(points, seg, pose, cfg.lookahead_m, cfg.v_max), dtype=np.float32)
        else:
            if chunk_left <= 0:
                tracker.reset(decider.waypoints(obs, to_robot_frame(target, pose, "xz")))
                chunk_left = cfg.execute_steps
            cmd = tracker.command()
            chunk_left -= 1
        obs, _, terminated, truncated, info = env.step(cmd)
        steps += 1
        collisions += int(bool(info.get("collided", False)))
        new_pose = np.asarray(info["pose"], dtype=np.float64)
        length += float(np.linalg.norm(new_pose[:2] - p))
        pose = new_pose
        if truncated and not terminated:
            return result("timeout")
