"""The simulator oracle: imagines each candidate by simulating it in a copy of the real simulator state.

An upper bound for ablations (docs/ARCHITECTURE.md, "World model"): it sees the true dynamics, so its
futures are exact and ``Imagination.outcome`` holds each candidate's true outcome. The whole MuJoCo
``MjData`` (state, warm start, derived quantities) is copied out before and back after imagining, so the
real episode is bit-identical with or without imagine calls. Candidates are stepped through the env's
own step logic (gymnasium-robotics ``step`` for Fetch, :meth:`AlohaEnv.simulate` for ALOHA) beneath the
gymnasium wrappers, so no step counter, RNG or cached observation of the real episode moves.
"""
from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np

from components.embodiment import EmbodimentSpec
from world_model.base import Imagination, WorldModelMismatchError, predicted_steps

#: pixels (height, width) each camera is reduced to (area average) in the oracle's latent
LATENT_SIZE = (12, 16)
#: Fetch outcome: success counts this much more than any distance (metres) in the outcome
SUCCESS_BONUS = 1.0
#: Fetch push / pick: weight of the gripper-to-object distance, which breaks ties before the object moves
REACH_OBJECT_WEIGHT = 0.1


def pixel_latent(images: dict, cameras: list[str], size: tuple[int, int] = LATENT_SIZE) -> np.ndarray:
    """Float pixels in [0, 1] of each camera, area-averaged to ``size``, concatenated: ``[C * h * w * 3]``."""
    from PIL import Image

    h, w = size
    parts = [np.asarray(Image.fromarray(np.asarray(images[c], dtype=np.uint8)).resize((w, h), Image.BOX),
                        dtype=np.float32).reshape(-1) / 255.0 for c in cameras]
    return np.concatenate(parts)


def side_by_side(images: dict, cameras: list[str]) -> np.ndarray:
    """The cameras' images left to right where they have the same height, else the first one."""
    ims = [np.asarray(images[c]) for c in cameras]
    return np.concatenate(ims, axis=1) if all(im.shape[0] == ims[0].shape[0] for im in ims) else ims[0]


class _FetchSim:
    """A gymnasium-robotics Fetch env (``components.envs.fetch.FetchEnv``) seen as a copyable simulator."""

    def __init__(self, env):
        import mujoco

        self.env, self.inner = env, env.inner
        self._mujoco = mujoco
        self._backup = mujoco.MjData(self.inner.model)
        self._site_pos = None
        self.cameras = list(env.cameras)
        self.image_size = tuple(env.image_size)
        self.success = False
        self.outcome = 0.0

    def save(self) -> None:
        self._mujoco.mj_copyData(self._backup, self.inner.model, self.inner.data)
        self._site_pos = self.inner.model.site_pos.copy()  # the goal marker moved by every render

    def restore(self) -> None:
        self._mujoco.mj_copyData(self.inner.data, self.inner.model, self._backup)
        self.inner.model.site_pos[:] = self._site_pos
        self.success, self.outcome = False, 0.0

    def step(self, action: np.ndarray) -> bool:
        """One control step; True if the episode would end here (never: Fetch ends by its time limit)."""
        raw, _, _, _, info = self.inner.step(np.asarray(action, dtype=np.float64).reshape(4))
        self.success = bool(info.get("is_success", False))
        outcome = -float(np.linalg.norm(raw["achieved_goal"] - self.inner.goal))
        if self.inner.has_object:
            grip, obj = raw["observation"][:3], raw["observation"][3:6]
            outcome -= REACH_OBJECT_WEIGHT * float(np.linalg.norm(grip - obj))
        self.outcome = outcome + SUCCESS_BONUS * self.success
        return False

    def render(self) -> dict:
        return self.env._render_all()


class _AlohaSim:
    """An ALOHA env (``components.envs.aloha.AlohaEnv``, dm_control physics) seen as a copyable simulator."""

    def __init__(self, env):
        import mujoco

        self.env = env
        self._mujoco = mujoco
        self._model, self._data = env.physics.model.ptr, env.physics.data.ptr
        self._backup = mujoco.MjData(self._model)
        self.cameras = list(env.cameras)
        self.image_size = tuple(env.image_size)
        self.success = False
        self.outcome = 0.0

    def save(self) -> None:
        self._mujoco.mj_copyData(self._backup, self._model, self._data)

    def restore(self) -> None:
        self._mujoco.mj_copyData(self._data, self._model, self._backup)
        self.success, self.outcome = False, 0.0

    def step(self, action: np.ndarray) -> bool:
        reward, diverged = self.env.simulate(action)
        self.outcome = max(self.outcome, reward)  # the best staged reward reached
        self.success = self.success or reward >= self.env.max_reward
        return diverged or (self.success and self.env.terminate_on_success)

    def render(self) -> dict:
        return {c: self.env._render_camera(c) for c in self.env.cameras}


def simulator_of(env):
    """The copyable simulator behind ``env`` (through its gymnasium wrappers), or None."""
    from components.envs.aloha import AlohaEnv
    from components.envs.fetch import FetchEnv

    inner = getattr(env, "unwrapped", env)
    if isinstance(inner, FetchEnv):
        return _FetchSim(inner)
    if isinstance(inner, AlohaEnv):
        return _AlohaSim(inner)
    return None


class OracleWorldModel:
    """True dynamics by simulation; ``num_frames`` frames per candidate at :func:`predicted_steps`."""

    name = "oracle"

    def __init__(self, num_frames: int = 4, latent_size: tuple[int, int] = LATENT_SIZE):
        self.num_frames = num_frames
        self.latent_size = latent_size
        self.sim = None

    def check_compatible(self, spec: EmbodimentSpec, env=None, context_frames: int | None = None,
                         execute_steps: int | None = None) -> None:
        """Needs a MuJoCo env rendering the spec's cameras; any history length and execute steps will do."""
        where = f"world model 'oracle' for embodiment '{spec.name}'"
        if env is None:
            raise WorldModelMismatchError(f"{where}: needs the simulation env (it simulates each candidate)")
        sim = simulator_of(env)
        if sim is None:
            raise WorldModelMismatchError(
                f"{where}: env {type(getattr(env, 'unwrapped', env)).__name__} has no simulator-state copy; the "
                f"oracle supports the MuJoCo envs (Fetch: gymnasium-robotics, ALOHA: dm_control), not this one")
        for cam in spec.cameras:
            if cam.name not in sim.cameras:
                raise WorldModelMismatchError(f"{where}: field cameras: the env renders {sim.cameras}, the policy "
                                              f"needs '{cam.name}'")
            if (cam.height, cam.width) != sim.image_size:
                raise WorldModelMismatchError(
                    f"{where}: field frame size of camera '{cam.name}': the env renders "
                    f"{sim.image_size[0]}x{sim.image_size[1]}, the policy needs {cam.height}x{cam.width}")

    def begin_episode(self, env) -> None:
        self.sim = simulator_of(env)

    @contextmanager
    def _restoring(self):
        self.sim.save()
        try:
            yield
        finally:
            self.sim.restore()

    def imagine(self, history: list[dict], chunks: np.ndarray, spec: EmbodimentSpec, execute_steps: int,
                seed: int | None = None) -> Imagination:
        """Simulate the first ``execute_steps`` actions of each chunk from the current simulator state
        (``history`` is not needed: the oracle reads the state itself); actions are clipped to the env's
        action space and cast to its dtype exactly as ``run_episode`` does."""
        if self.sim is None:
            raise RuntimeError("OracleWorldModel.imagine before begin_episode(env)")
        t0 = time.perf_counter()
        steps = predicted_steps(execute_steps, self.num_frames)
        space = self.sim.env.action_space
        cams = spec.camera_names
        latents, frames, outcome, success = [], [], [], []
        with self._restoring():
            for chunk in np.asarray(chunks):
                self.sim.restore()
                seen, ended = [], False
                for t in range(1, execute_steps + 1):
                    if not ended:
                        ended = self.sim.step(np.clip(chunk[t - 1], space.low, space.high).astype(space.dtype))
                        if t in steps:
                            seen.append(self.sim.render())
                    elif t in steps:  # the episode would have ended: the last frame stays
                        seen.append(seen[-1] if seen else self.sim.render())
                latents.append([pixel_latent(im, cams, self.latent_size) for im in seen])
                frames.append([side_by_side(im, cams) for im in seen])
                outcome.append(self.sim.outcome)
                success.append(self.sim.success)
        return Imagination(latents=np.asarray(latents, dtype=np.float32), frames=np.asarray(frames, dtype=np.uint8),
                           steps=steps, outcome=np.asarray(outcome, dtype=np.float64),
                           imagine_ms=(time.perf_counter() - t0) * 1e3, info={"success": np.asarray(success)})

    def encode(self, obs: dict, spec: EmbodimentSpec) -> np.ndarray:
        return pixel_latent(obs["images"], spec.camera_names, self.latent_size)
