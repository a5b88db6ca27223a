"""Fetch manipulation tasks (gymnasium-robotics, MuJoCo) behind the project's observation contract.

Wraps the gymnasium-robotics ``MujocoFetch*Env`` classes (``FetchReach-v4``, ``FetchPush-v4``,
``FetchPickAndPlace-v4`` in gymnasium-robotics 1.4) and exposes

* observation ``Dict(images=Dict(front=..., side=...: Box(0, 255, (H, W, 3), uint8)), state=Box(float32, (4,)))``
  with ``state = (gripper x, y, z [world, m], finger opening [m] = sum of both finger joints)``.
  Two fixed cameras by default, ``front`` (looking along -x, from the side opposite the robot) and
  ``side`` (looking along +y): one view cannot place the reach target in 3-D (every point on a
  camera ray projects to the same pixel), two roughly orthogonal views can;
* action ``Box(-1, 1, (4,))``: end-effector dx, dy, dz (x 0.05 m) + gripper command, passed through
  unchanged to gymnasium-robotics;
* ``info["instruction"]``, ``info["is_success"]`` (from the underlying env), ``.instruction``.

Images come from fixed free cameras rendered by a ``mujoco.Renderer`` created at the requested
size (no full-size render + resize). The red goal site is updated before every render, so the target
is visible; it is drawn with the radius of the success region (``marker_radius``, default the
env's 5 cm ``distance_threshold``). The privileged goal-env dict observation of the last reset/step is kept in
``env.unwrapped.raw_obs`` for scripted experts (never for policies).
"""

from __future__ import annotations

import atexit
import os
import weakref

os.environ.setdefault("MUJOCO_GL", "egl")

from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402

TASKS: dict[str, dict[str, str]] = {
    "reach": {
        "entry": "gymnasium_robotics.envs.fetch.reach:MujocoFetchReachEnv",
        "instruction": "move the gripper to the red target",
    },
    "push": {
        "entry": "gymnasium_robotics.envs.fetch.push:MujocoFetchPushEnv",
        "instruction": "push the black block to the red target",
    },
    "pick_and_place": {
        "entry": "gymnasium_robotics.envs.fetch.pick_and_place:MujocoFetchPickAndPlaceEnv",
        "instruction": "pick up the black block and place it at the red target",
    },
}

# Fixed external cameras. front: from the side opposite the robot, slightly above (sees y and a
# mix of x and z); side: from the robot's left, low (sees x and z).
CAMERAS: dict[str, dict] = {
    "front": {"lookat": (1.32, 0.75, 0.50), "distance": 0.80, "azimuth": 180.0, "elevation": -35.0},
    "side": {"lookat": (1.32, 0.75, 0.50), "distance": 0.80, "azimuth": 90.0, "elevation": -20.0},
}
DEFAULT_CAMERAS = ("front", "side")


_LIVE_ENVS: "weakref.WeakSet[FetchEnv]" = weakref.WeakSet()


_ATEXIT_DONE = False


def _close_renderers() -> None:
    # Free EGL contexts before interpreter teardown (avoids noisy EGLError tracebacks from __del__).
    for env in list(_LIVE_ENVS):
        try:
            if env._renderer is not None:
                env._renderer.close()
                env._renderer = None
        except Exception:
            pass


def _load_entry(entry: str):
    mod_name, cls_name = entry.split(":")
    import importlib

    return getattr(importlib.import_module(mod_name), cls_name)


class FetchEnv(gym.Env):
    """One Fetch task (``task`` in ``reach | push | pick_and_place``) with images + compact state."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 25}

    def __init__(
        self,
        task: str = "reach",
        image_size: tuple[int, int] = (120, 160),
        cameras: tuple[str, ...] | list[str] = DEFAULT_CAMERAS,
        camera: dict[str, dict] | None = None,
        reward_type: str = "sparse",
        render_mode: str | None = None,
        marker_radius: float | None = None,
    ):
        if task not in TASKS:
            raise ValueError(f"unknown Fetch task {task!r}; known: {sorted(TASKS)}")
        cameras = tuple(cameras)
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown or not cameras:
            raise ValueError(f"Fetch cameras {list(cameras)}: unknown {unknown}; known: {sorted(CAMERAS)}")
        bad = sorted(set(camera or {}) - set(cameras))
        if bad:
            raise ValueError(f"Fetch camera overrides for {bad}, which are not among cameras {list(cameras)}")
        self.cameras = cameras
        self.task = task
        self.image_size = (int(image_size[0]), int(image_size[1]))
        h, w = self.image_size
        cls = _load_entry(TASKS[task]["entry"])
        # width/height size the offscreen buffer of the inner env; we render with our own renderer.
        self.inner = cls(reward_type=reward_type, width=max(w, 64), height=max(h, 64))
        self.instruction = TASKS[task]["instruction"]
        self.render_mode = render_mode

        model = self.inner.model
        # The red target marker is drawn as the success region itself: a sphere of radius
        # distance_threshold (5 cm) around the goal, instead of gymnasium-robotics' 2 cm dot (3 px
        # in a 128-px image). Sites are visual only: physics and success are unchanged.
        radius = self.inner.distance_threshold if marker_radius is None else float(marker_radius)
        model.site_size[model.site("target0").id] = radius
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), w)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), h)
        self._renderer: mujoco.Renderer | None = None
        self._cams: dict[str, mujoco.MjvCamera] = {}
        for name in cameras:
            cfg = dict(CAMERAS[name], **(camera or {}).get(name, {}))
            cam = mujoco.MjvCamera()
            cam.type = mujoco.mjtCamera.mjCAMERA_FREE
            cam.lookat[:] = np.asarray(cfg["lookat"], dtype=np.float64)
            cam.distance = float(cfg["distance"])
            cam.azimuth = float(cfg["azimuth"])
            cam.elevation = float(cfg["elevation"])
            self._cams[name] = cam

        self._l_finger = model.joint("robot0:l_gripper_finger_joint").qposadr[0]
        self._r_finger = model.joint("robot0:r_gripper_finger_joint").qposadr[0]
        self._grip_site = model.site("robot0:grip").id

        self.action_space = spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        self.observation_space = spaces.Dict(
            {
                "images": spaces.Dict({c: spaces.Box(0, 255, (h, w, 3), dtype=np.uint8) for c in cameras}),
                "state": spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float32),
            }
        )
        self.raw_obs: dict[str, np.ndarray] | None = None
        self._last_frames: dict[str, np.ndarray] | None = None
        _LIVE_ENVS.add(self)

    # ------------------------------------------------------------------ helpers
    def _render_all(self) -> dict[str, np.ndarray]:
        if self._renderer is None:
            h, w = self.image_size
            self._renderer = mujoco.Renderer(self.inner.model, height=h, width=w)
            global _ATEXIT_DONE
            if not _ATEXIT_DONE:  # after mujoco.egl registered its own exit hook, so ours runs first
                atexit.register(_close_renderers)
                _ATEXIT_DONE = True
        self.inner._render_callback()  # moves the red target site to the current goal
        frames = {}
        for name, cam in self._cams.items():
            self._renderer.update_scene(self.inner.data, camera=cam)
            frames[name] = self._renderer.render().copy()
        return frames

    def _state(self) -> np.ndarray:
        d = self.inner.data
        grip = d.site_xpos[self._grip_site]
        width = d.qpos[self._l_finger] + d.qpos[self._r_finger]
        return np.array([grip[0], grip[1], grip[2], width], dtype=np.float32)

    def _obs(self) -> dict[str, Any]:
        frames = self._render_all()
        self._last_frames = frames
        return {"images": dict(frames), "state": self._state()}

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        # The inner env draws block/goal from its own np_random: seed it from ours so that
        # reset(seed=s) is reproducible and reset() without a seed continues the stream.
        inner_seed = int(self.np_random.integers(0, 2**31 - 1))
        raw, _ = self.inner.reset(seed=inner_seed)
        self.raw_obs = raw
        success = bool(self.inner._is_success(raw["achieved_goal"], self.inner.goal))
        info = {"instruction": self.instruction, "is_success": success}
        return self._obs(), info

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).reshape(4)
        raw, reward, terminated, truncated, inner_info = self.inner.step(action)
        self.raw_obs = raw
        info = {
            "instruction": self.instruction,
            "is_success": bool(inner_info.get("is_success", False)),
        }
        return self._obs(), float(reward), bool(terminated), bool(truncated), info

    def render(self):
        """The cameras side by side (first camera left)."""
        frames = self._last_frames if self._last_frames is not None else self._render_all()
        return np.concatenate([frames[c] for c in self.cameras], axis=1)

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self.inner.close()
        super().close()


def make_fetch_reach(**kwargs) -> FetchEnv:
    return FetchEnv(task="reach", **kwargs)


def make_fetch_push(**kwargs) -> FetchEnv:
    return FetchEnv(task="push", **kwargs)


def make_fetch_pick_and_place(**kwargs) -> FetchEnv:
    return FetchEnv(task="pick_and_place", **kwargs)
