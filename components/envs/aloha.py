"""ALOHA bimanual (2x ViperX 300s) simulation tasks as gymnasium envs.

Wraps the MuJoCo scenes and reward definitions shipped with ``gym-aloha`` (transfer cube,
insertion) but drives the dm_control ``Physics`` directly instead of going through
``dm_control.rl.control.Environment``: gym-aloha's task ``get_observation`` renders three
480x640 cameras on every step, which makes stepping ~3x slower. Here only the cameras that
were asked for are rendered, at the size asked for.

Observation (shared contract of all envs in this project)::

    {"images": {camera: uint8 [H, W, 3]}, "state": float32 [14]}

``state`` and the action are the 14 joint positions in gym-aloha / ACT order: left arm
(waist, shoulder, elbow, forearm_roll, wrist_angle, wrist_rotate), left gripper (normalized
finger position, 0 = closed, 1 = open), then the same 7 for the right arm. Actions are
absolute joint position targets (the gripper entry is the normalized finger target).

Episode end: ``terminated`` becomes True on the first step whose reward equals the task's
max reward (``info["is_success"]``); ``truncated`` becomes True after ``max_episode_steps``
(400) steps, or earlier if the simulation diverges (``info["physics_error"]``; happens with
violent random actions). Reset with a seed is reproducible (object poses come from ``self.np_random``).
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

TRANSFER_CUBE = "transfer_cube"
INSERTION = "insertion"

INSTRUCTIONS = {
    TRANSFER_CUBE: "pick up the red cube with the right arm and hand it to the left arm",
    INSERTION: "insert the peg into the socket",
}

JOINT_NAMES = (
    "left_waist", "left_shoulder", "left_elbow", "left_forearm_roll", "left_wrist_angle",
    "left_wrist_rotate", "left_gripper",
    "right_waist", "right_shoulder", "right_elbow", "right_forearm_roll", "right_wrist_angle",
    "right_wrist_rotate", "right_gripper",
)

# Same numbers as gym_aloha.constants (kept here so the mapping is visible in one place).
DT = 0.02  # control period, 50 Hz
START_ARM_POSE = np.array(
    [0, -0.96, 1.16, 0, -0.3, 0, 0.02239, -0.02239, 0, -0.96, 1.16, 0, -0.3, 0, 0.02239, -0.02239],
    dtype=np.float64,
)
PUPPET_GRIPPER_POSITION_OPEN = 0.05800
PUPPET_GRIPPER_POSITION_CLOSE = 0.01844

# Object pose sampling ranges (as gym_aloha.utils.sample_box_pose / sample_insertion_pose).
CUBE_RANGE = np.array([[0.0, 0.2], [0.4, 0.6], [0.05, 0.05]])
PEG_RANGE = np.array([[0.1, 0.2], [0.4, 0.6], [0.05, 0.05]])
SOCKET_RANGE = np.array([[-0.2, -0.1], [0.4, 0.6], [0.05, 0.05]])


def normalize_gripper(x):
    return (x - PUPPET_GRIPPER_POSITION_CLOSE) / (PUPPET_GRIPPER_POSITION_OPEN - PUPPET_GRIPPER_POSITION_CLOSE)


def unnormalize_gripper(x):
    return x * (PUPPET_GRIPPER_POSITION_OPEN - PUPPET_GRIPPER_POSITION_CLOSE) + PUPPET_GRIPPER_POSITION_CLOSE


def assets_dir():
    import gym_aloha

    return os.path.join(os.path.dirname(gym_aloha.__file__), "assets")


def xml_path(task: str, end_effector: bool = False) -> str:
    if task not in INSTRUCTIONS:
        raise ValueError(f"unknown ALOHA task {task!r}; expected one of {sorted(INSTRUCTIONS)}")
    prefix = "bimanual_viperx_end_effector_" if end_effector else "bimanual_viperx_"
    return os.path.join(assets_dir(), prefix + task + ".xml")


def sample_object_poses(task: str, rng: np.random.Generator) -> np.ndarray:
    """Free-joint qpos of the task objects: [7] (cube) or [14] (peg, socket), identity quats."""
    quat = np.array([1.0, 0.0, 0.0, 0.0])
    if task == TRANSFER_CUBE:
        return np.concatenate([rng.uniform(CUBE_RANGE[:, 0], CUBE_RANGE[:, 1]), quat])
    peg = rng.uniform(PEG_RANGE[:, 0], PEG_RANGE[:, 1])
    socket = rng.uniform(SOCKET_RANGE[:, 0], SOCKET_RANGE[:, 1])
    return np.concatenate([peg, quat, socket, quat])


def make_reward_fn(task: str):
    """gym-aloha's own reward (contact based, max 4) for the task, as ``fn(physics) -> int``."""
    from gym_aloha.tasks.sim import InsertionTask, TransferCubeTask

    t = TransferCubeTask() if task == TRANSFER_CUBE else InsertionTask()
    return t.get_reward, t.max_reward


# Offscreen render settings. The gym-aloha scene asks for a 4096 px shadow map and 4x
# multisampling, which dominates step time under software (llvmpipe) EGL: measured on a 2-core
# CPU for one 240x320 camera, ~39 ms "full", ~17 ms "fast", ~7 ms "flat".
RENDER_QUALITY = {
    "full": None,  # the scene's own settings (same look as gym-aloha)
    "fast": (1024, 0),  # (shadow map size, offscreen multisamples): shadows kept, no MSAA
    "flat": (0, 0),  # no shadows, no MSAA
}


def configure_rendering(physics, quality: str) -> None:
    if quality not in RENDER_QUALITY:
        raise ValueError(f"render_quality {quality!r} not in {sorted(RENDER_QUALITY)}")
    setting = RENDER_QUALITY[quality]
    if setting is not None:
        physics.model.vis.quality.shadowsize = setting[0]
        physics.model.vis.quality.offsamples = setting[1]


def joint_state(physics) -> np.ndarray:
    """14-d state in action order, grippers normalized (same as gym-aloha ``get_qpos``)."""
    q = physics.data.qpos
    return np.array(
        [*q[0:6], normalize_gripper(q[6]), *q[8:14], normalize_gripper(q[14])], dtype=np.float64
    )


def action_to_ctrl(action: np.ndarray) -> np.ndarray:
    a = np.asarray(action, dtype=np.float64)
    gl = unnormalize_gripper(a[6])
    gr = unnormalize_gripper(a[13])
    return np.concatenate([a[0:6], [gl, -gl], a[7:13], [gr, -gr]])


class AlohaEnv(gym.Env):
    """Joint-space ALOHA task (``task`` = "transfer_cube" or "insertion")."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(
        self,
        task: str = TRANSFER_CUBE,
        cameras: Sequence[str] = ("top",),
        image_size: Sequence[int] = (240, 320),
        render_mode: str | None = None,
        max_episode_steps: int = 400,
        terminate_on_success: bool = True,
        render_quality: str = "full",
    ):
        from dm_control import mujoco as dm_mujoco

        if task not in INSTRUCTIONS:
            raise ValueError(f"unknown ALOHA task {task!r}; expected one of {sorted(INSTRUCTIONS)}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r} not supported")
        self.task = task
        self.instruction = INSTRUCTIONS[task]
        self.cameras = tuple(cameras)
        if len(self.cameras) == 0:
            raise ValueError("at least one camera is required")
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.render_mode = render_mode
        self.max_episode_steps = int(max_episode_steps)
        self.terminate_on_success = terminate_on_success

        self.physics = dm_mujoco.Physics.from_xml_path(xml_path(task))
        model = self.physics.model
        names = [model.id2name(i, "camera") for i in range(model.ncam)]
        unknown = [c for c in self.cameras if c not in names]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; available: {names}")
        h, w = self.image_size
        configure_rendering(self.physics, render_quality)
        self.render_quality = render_quality
        # the offscreen buffer must be at least as large as the requested image
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), w)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), h)
        self._n_sub_steps = int(round(DT / model.opt.timestep))
        self._reward_fn, self.max_reward = make_reward_fn(task)

        self.observation_space = spaces.Dict(
            {
                "images": spaces.Dict(
                    {c: spaces.Box(0, 255, (h, w, 3), np.uint8) for c in self.cameras}
                ),
                # joints are limited to about +-pi; grippers are normalized to ~[0.06, 0.98]
                "state": spaces.Box(
                    np.array([-2 * np.pi] * 6 + [-1.0] + [-2 * np.pi] * 6 + [-1.0], np.float32),
                    np.array([2 * np.pi] * 6 + [2.0] + [2 * np.pi] * 6 + [2.0], np.float32),
                    (14,),
                    np.float32,
                ),
            }
        )
        low = np.zeros(14, np.float32)
        high = np.ones(14, np.float32)
        for arm in (0, 7):
            act_ids = range(arm // 7 * 8, arm // 7 * 8 + 6)
            for k, a in enumerate(act_ids):
                low[arm + k], high[arm + k] = model.actuator_ctrlrange[a]
        self.action_space = spaces.Box(low, high, (14,), np.float32)
        self._steps = 0
        self._last_obs = None

    # -- helpers -----------------------------------------------------------------------------
    def _render_camera(self, camera: str) -> np.ndarray:
        h, w = self.image_size
        return np.ascontiguousarray(self.physics.render(height=h, width=w, camera_id=camera))

    def _get_obs(self) -> dict[str, Any]:
        return {
            "images": {c: self._render_camera(c) for c in self.cameras},
            "state": joint_state(self.physics).astype(np.float32),
        }

    def object_poses(self) -> np.ndarray:
        return self.physics.data.qpos[16:].copy()

    # -- gymnasium API -----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        poses = None if options is None else options.get("object_poses")
        if poses is None:
            poses = sample_object_poses(self.task, self.np_random)
        self._reset_physics(np.asarray(poses, dtype=np.float64))
        self._steps = 0
        obs = self._get_obs()
        self._last_obs = obs
        info = {"instruction": self.instruction, "is_success": False, "object_poses": self.object_poses()}
        return obs, info

    def _reset_physics(self, poses: np.ndarray) -> None:
        physics = self.physics
        with physics.reset_context():  # mj_resetData ... mj_forward
            physics.data.qpos[:16] = START_ARM_POSE
            physics.data.ctrl[:] = START_ARM_POSE
            physics.data.qpos[16:] = poses

    def simulate(self, action) -> tuple[float, bool]:
        """Advance the physics by one control step: ``(reward, diverged)``. No rendering, no step
        counter: what :meth:`step` and the simulator oracle (``world_model.oracle``) share."""
        action = np.asarray(action, dtype=np.float64).reshape(14)
        from dm_control.rl.control import PhysicsError

        self.physics.set_control(action_to_ctrl(action))
        try:
            self.physics.step(self._n_sub_steps)
            state = joint_state(self.physics).astype(np.float32)
            diverged = not self.observation_space["state"].contains(state)
        except PhysicsError:
            diverged = True
        return (0.0 if diverged else float(self._reward_fn(self.physics))), diverged

    def step(self, action):
        self._steps += 1
        reward, diverged = self.simulate(action)
        if diverged:
            # Violent random actions can make the simulation diverge (mjWARN_BADQACC). The
            # episode is then cut (truncated) and the last valid observation is returned.
            info = {"instruction": self.instruction, "is_success": False, "physics_error": True}
            last = self._last_obs
            obs = {"images": {c: v.copy() for c, v in last["images"].items()}, "state": last["state"].copy()}
            return obs, 0.0, False, True, info
        success = reward >= self.max_reward
        terminated = bool(success and self.terminate_on_success)
        truncated = bool(self._steps >= self.max_episode_steps and not terminated)
        obs = self._get_obs()
        self._last_obs = obs
        info = {"instruction": self.instruction, "is_success": bool(success)}
        return obs, reward, terminated, truncated, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._last_obs is not None:
            return self._last_obs["images"][self.cameras[0]].copy()
        return self._render_camera(self.cameras[0])

    def close(self):
        physics = getattr(self, "physics", None)
        if physics is not None:
            try:
                physics.free()
            except Exception:  # pragma: no cover - best effort
                pass
            self.physics = None


class AlohaTransferCubeEnv(AlohaEnv):
    def __init__(self, **kwargs):
        super().__init__(task=TRANSFER_CUBE, **kwargs)


class AlohaInsertionEnv(AlohaEnv):
    def __init__(self, **kwargs):
        super().__init__(task=INSERTION, **kwargs)


ENV_IDS = {
    "vla_stack/AlohaTransferCube-v0": TRANSFER_CUBE,
    "vla_stack/AlohaInsertion-v0": INSERTION,
}


def register_envs() -> None:
    """Register the ALOHA ids with gymnasium (idempotent)."""
    for env_id, cls in (
        ("vla_stack/AlohaTransferCube-v0", "AlohaTransferCubeEnv"),
        ("vla_stack/AlohaInsertion-v0", "AlohaInsertionEnv"),
    ):
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point=f"components.envs.aloha:{cls}",
            # the env truncates itself at max_episode_steps; no TimeLimit wrapper on top
            kwargs={"max_episode_steps": 400},
        )
