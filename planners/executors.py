"""Executors: how a decided chunk becomes one env action per step, per action kind.

* ``absolute_joints`` / ``ee_delta``: :class:`ChunkExecutor` runs the first ``execute_horizon`` actions of a
  chunk ``[H, A]``, then asks for a new one; :class:`TemporalEnsemble` (ACT) asks every step and executes a
  weighted mean of the chunks covering the step.
* ``waypoints``: :class:`WaypointExecutor` follows a chunk of robot-frame waypoints ``[N, 4]`` with
  ``planners.follower`` for ``execute_horizon`` env steps.

Default horizons and the ensembling default per kind are in :func:`default_execute_horizon` and
:func:`default_temporal_ensemble`; why these defaults were chosen is in docs/history.md.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from components.embodiment import EmbodimentSpec
from planners.follower import FollowerConfig, WaypointFollower


def default_execute_horizon(spec: EmbodimentSpec) -> int:
    """Env steps per decision: one waypoint spacing (waypoints), H / 2 (absolute joints: far-ahead
    targets go stale), H (end-effector deltas)."""
    if spec.action_kind == "waypoints":
        return max(1, round((spec.waypoint_spacing_s or 1.0 / spec.control_hz) * spec.control_hz))
    if spec.action_kind == "absolute_joints":
        return max(1, spec.chunk_horizon // 2)
    return spec.chunk_horizon


def default_temporal_ensemble(spec: EmbodimentSpec) -> bool:
    """Ensemble by default for end-effector deltas only (waypoints are in a per-prediction robot frame)."""
    return spec.action_kind == "ee_delta"


def max_execute_horizon(spec: EmbodimentSpec) -> int:
    """Longest ``execute_horizon`` a chunk covers (waypoints: the whole chunk of waypoint spacings)."""
    if spec.action_kind == "waypoints":
        return default_execute_horizon(spec) * spec.chunk_horizon
    return spec.chunk_horizon


class ChunkExecutor:
    """Execute the first ``execute_horizon`` actions of each chunk ``[H, A]``, then ask for a new one."""

    def __init__(self, execute_horizon: int):
        self.execute_horizon = execute_horizon
        self.queue: deque[np.ndarray] = deque()

    def needs_chunk(self) -> bool:
        return not self.queue

    def set_chunk(self, chunk: np.ndarray) -> None:
        self.queue = deque(chunk[: self.execute_horizon])

    def cut(self) -> None:
        """Drop what is left of the chunk, so the next step asks for a new one."""
        self.queue.clear()

    def action(self) -> np.ndarray:
        return self.queue.popleft()


class TemporalEnsemble:
    """ACT's temporal ensembling: a chunk every step, executed action = weighted mean over the
    chunks that cover the step, weights ``exp(-decay * i)`` (i = 0: oldest chunk)."""

    def __init__(self, horizon: int, decay: float):
        self.decay = decay
        self.chunks: deque[tuple[int, np.ndarray]] = deque(maxlen=horizon)
        self.t = 0

    def needs_chunk(self) -> bool:
        return True

    def set_chunk(self, chunk: np.ndarray) -> None:
        self.chunks.append((self.t, chunk))

    def cut(self) -> None:
        self.chunks.clear()

    def action(self) -> np.ndarray:
        covering = np.stack([c[self.t - start] for start, c in self.chunks if self.t - start < len(c)])
        w = np.exp(-self.decay * np.arange(len(covering)))
        self.t += 1
        return (w[:, None] * covering).sum(0) / w.sum()


class WaypointExecutor:
    """Follow each chunk of waypoints ``[N, 4]`` with pure pursuit for ``execute_horizon`` env steps."""

    def __init__(self, execute_horizon: int, follower: WaypointFollower):
        self.execute_horizon = execute_horizon
        self.follower = follower
        self.left = 0

    def needs_chunk(self) -> bool:
        return self.left == 0

    def set_chunk(self, chunk: np.ndarray) -> None:
        self.follower.reset(chunk)
        self.left = self.execute_horizon

    def cut(self) -> None:
        self.left = 0

    def action(self) -> np.ndarray:
        self.left -= 1
        return self.follower.command()


def make_executor(spec: EmbodimentSpec, env, execute_horizon: int, temporal_ensemble: bool = False,
                  ensemble_decay: float = 0.01):
    """The executor for ``spec``'s action kind; the waypoint follower takes its limits from ``env``'s action space."""
    dt = float(getattr(env.unwrapped, "dt", 1.0 / spec.control_hz))
    return make_executor_for(spec, env.action_space, dt, execute_horizon, temporal_ensemble, ensemble_decay)


def make_executor_for(spec: EmbodimentSpec, action_space, dt_s: float, execute_horizon: int,
                      temporal_ensemble: bool = False, ensemble_decay: float = 0.01):
    """:func:`make_executor` from the env's action space and step length (what a vector env exposes)."""
    if spec.action_kind == "waypoints":
        box = action_space
        cfg = FollowerConfig(v_min=float(box.low[0]), v_max=float(box.high[0]), w_max=float(box.high[1]),
                             dt_s=float(dt_s), spacing_s=float(spec.waypoint_spacing_s or 1.0 / spec.control_hz))
        return WaypointExecutor(execute_horizon, WaypointFollower(cfg))
    if temporal_ensemble:
        return TemporalEnsemble(spec.chunk_horizon, ensemble_decay)
    return ChunkExecutor(execute_horizon)
