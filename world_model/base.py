"""What every world model gives the imagine-execute-verify loop (docs/ARCHITECTURE.md, "World model").

A world model imagines, for K candidate chunks at once, the frames the policy's cameras would see
at a few steps of the executed part of each chunk. ``planners`` only uses this interface, so a
learned pipeline (``world_model.pipeline``), the simulator oracle and ``none`` are interchangeable,
and can be swapped between episodes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from components.embodiment import EmbodimentSpec
from components.errors import CheckpointError


class WorldModelMismatchError(CheckpointError):
    """A world-model checkpoint that does not fit the policy or env (cameras, frame size, context,
    action slots, embodiment): the message names the field, what the checkpoint has and what was needed."""


def predicted_steps(execute_steps: int, num_frames: int) -> list[int]:
    """Step offsets (1-based, within the executed part of a chunk) at which frames are imagined:
    ``num_frames`` points spread evenly, the last one at the end (4 frames: the quarter points)."""
    if execute_steps < 1 or num_frames < 1:
        raise ValueError(f"execute_steps={execute_steps} and num_frames={num_frames} must both be >= 1")
    return sorted({max(1, round(execute_steps * (i + 1) / num_frames)) for i in range(num_frames)})


@dataclass
class Imagination:
    """The imagined futures of K candidates.

    ``latents [K, F, ...]``: what surprise is measured in (the same space ``encode`` maps real
    observations to); ``frames [K, F, H, W, 3]`` uint8 (cameras side by side) for videos, or None;
    ``steps``: the F step offsets of the predicted frames; ``outcome [K]``: the true outcome of each
    candidate where the model knows it (the oracle: best staged reward or negative distance to the
    goal reached at the end of the executed part), else None; ``info``: per-model extras.
    """
    latents: np.ndarray
    frames: np.ndarray | None
    steps: list[int]
    outcome: np.ndarray | None = None
    imagine_ms: float = 0.0
    info: dict = field(default_factory=dict)


@runtime_checkable
class WorldModel(Protocol):
    name: str

    def check_compatible(self, spec: EmbodimentSpec, env=None, context_frames: int | None = None,
                         execute_steps: int | None = None) -> None:
        """Raise :class:`WorldModelMismatchError` before any env step if this model cannot serve ``spec``
        in ``env`` with the loop's history length ``context_frames`` and ``execute_steps`` per chunk."""

    def begin_episode(self, env) -> None:
        """Called after each ``env.reset`` (the oracle keeps a handle on the simulator)."""

    def imagine(self, history: list[dict], chunks: np.ndarray, spec: EmbodimentSpec,
                execute_steps: int, seed: int | None = None) -> Imagination:
        """Futures of ``chunks [K, H, A]`` (robot units, slot order of ``spec``) from the last
        observations ``history`` (oldest first; the last is the current one), all K in one batched call."""

    def encode(self, obs: dict, spec: EmbodimentSpec) -> np.ndarray:
        """Latent of one real observation, comparable with ``Imagination.latents[k, f]``."""


@runtime_checkable
class Scorer(Protocol):
    """Ranks imagined futures: a higher score is a better candidate."""
    name: str

    def score(self, imagination: Imagination, instruction: str, spec: EmbodimentSpec,
              rng: np.random.Generator) -> np.ndarray:
        """Scores ``[K]`` of the K imagined candidates."""
