"""Scenes a camera is driven through for rendered video: a floor plan in the wheeled env, or one of
MiniWorld's stock scenes (``MiniWorld-Maze-v0``, ``-FourRooms-v0``, ``-Sidewalk-v0``, ...), one interface.

    scene = make_scene("house", (90, 160))           # or make_scene("MiniWorld-Maze-v0", (90, 160))
    pose = scene.reset(seed, look, rooms_rng)         # (x, z, yaw) in MiniWorld's frame
    rgb, depth, pose, collided = scene.step(v, w)     # the wheeled base's motion (``wheeled.drive``)

A stock scene is built from its gymnasium registration (its class with :class:`OwnDisplayList` mixed
in, so it keeps its own display list beside other scenes of the process) with MiniWorld's domain
randomization on; its textures are its own, the look sets its lights and field of view.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from components.envs.floorplan import FloorPlan, load_floorplan
from components.envs.looks import Look
from components.envs.wheeled import OwnDisplayList, WheeledEnv, drive, observe_rgb_depth
from components.errors import UsageError
from components.kinematics import WHEELED_BASE

STOCK_PREFIX = "MiniWorld-"


def is_stock(name: str) -> bool:
    """Whether ``name`` names a MiniWorld stock scene (a gymnasium id) rather than a floor plan."""
    return name.startswith(STOCK_PREFIX)


class Scene:
    """A MiniWorld env (unwrapped) the camera is driven through, ``dt_s`` per step, at the base's limits."""

    def __init__(self, name: str, env, plan: FloorPlan | None = None, dt_s: float = WHEELED_BASE.dt_s):
        self.name, self.env, self.plan, self.dt_s = name, env, plan, dt_s

    @property
    def rooms(self) -> int:
        """How many rooms a look colours (a floor plan's; a stock scene keeps its own textures)."""
        return len(self.plan.rooms) if self.plan else 0

    @property
    def pose(self) -> np.ndarray:
        """(x, z, yaw) float64 [3] in MiniWorld's frame (``components.kinematics`` "xz")."""
        a = self.env.agent
        return np.array([a.pos[0], a.pos[2], a.dir], dtype=np.float64)

    def reset(self, seed: int, look: Look | None) -> np.ndarray:
        """A new episode from ``seed`` (the start pose, and for a floor plan the start and goal rooms) in ``look``."""
        if self.plan is not None:
            self.env.reset(seed=seed, options={"look": look})
        else:
            self.env.look = look
            self.env.reset(seed=seed)
        return self.pose

    def observe(self) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 [H, W, 3] and depth float32 [H, W] m from the camera now."""
        return observe_rgb_depth(self.env)

    def step(self, v: float, w: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """Drive at (v m/s, omega rad/s), clipped to the base's limits, for one step: RGB, depth, pose, collided."""
        v, w = WHEELED_BASE.clip(v, w)
        collided = drive(self.env, v, w, self.dt_s)
        rgb, depth = self.observe()
        return rgb, depth, self.pose, collided

    def close(self) -> None:
        self.env.close()


def _stock_class(env_id: str):
    import gymnasium as gym
    from gymnasium.envs.registration import load_env_creator

    import miniworld  # noqa: F401  (registers the MiniWorld ids)

    try:
        spec = gym.spec(env_id)
    except gym.error.Error:
        known = sorted(i for i in gym.registry if is_stock(i))
        raise UsageError(f"unknown MiniWorld scene {env_id!r}; known: {known}") from None
    base = load_env_creator(spec.entry_point)
    return type(f"Own{base.__name__}", (OwnDisplayList, base), {}), dict(spec.kwargs)


def check_scene(name: str) -> None:
    """Raise the error :func:`make_scene` would for an unknown ``name``, without building the scene."""
    _stock_class(name) if is_stock(name) else load_floorplan(name)


def make_scene(name: str, image_size: Sequence[int]) -> Scene:
    """The scene ``name`` (a floor plan name or path, or a ``MiniWorld-...`` gymnasium id) rendering
    ``image_size`` (H, W). An unknown floor plan is a ``FloorPlanError``, an unknown stock id a ``UsageError``."""
    h, w = int(image_size[0]), int(image_size[1])
    window = {"window_width": max(2 * w, 64), "window_height": max(2 * h, 48)}
    if is_stock(name):
        cls, kwargs = _stock_class(name)
        return Scene(name, cls(obs_width=w, obs_height=h, domain_rand=True, **window, **kwargs))
    plan = load_floorplan(name)
    return Scene(name, WheeledEnv(floorplan=plan, image_size=(h, w), max_steps=10**9), plan)
