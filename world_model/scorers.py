"""Scorers by name (``vla-stack run --scorer NAME``): each ranks K imagined futures, higher is better.

* ``random``: a seeded random choice among the K candidates (the random-of-K control arm);
* ``oracle_outcome``: the true outcome the world model reports (the simulator oracle): the headroom arm;
* ``goal_latent``: negative distance of the last imagined latent to the encoding of a goal image;
* ``progress``: the learned value of the last imagined frame (``world_model.progress``, ``--scorer_model DIR``);
* :class:`UncertaintyPenalty` wraps any of them: minus ``weight`` times the disagreement of the several
  samples a world model imagined per candidate (``Imagination.info["sample_latents"] [K, S, F, ...]``).

A learned scorer registers itself with :func:`register_scorer` (docs/ARCHITECTURE.md, "World model").
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from components.embodiment import EmbodimentSpec
from components.errors import UsageError
from world_model.base import Imagination

#: the key of ``Imagination.info`` holding several imagined samples per candidate, ``[K, S, F, ...]``
SAMPLE_LATENTS = "sample_latents"


class RandomScorer:
    """Uniform random scores from the decision's seeded generator: argmax is a random candidate."""
    name = "random"

    def score(self, imagination: Imagination, instruction: str, spec: EmbodimentSpec,
              rng: np.random.Generator) -> np.ndarray:
        return rng.random(len(imagination.latents))


class OracleOutcomeScorer:
    """The true outcome of each candidate (``Imagination.outcome``); only a simulator oracle knows it."""
    name = "oracle_outcome"

    def score(self, imagination: Imagination, instruction: str, spec: EmbodimentSpec,
              rng: np.random.Generator) -> np.ndarray:
        if imagination.outcome is None:
            raise UsageError("--scorer oracle_outcome: the world model reports no true outcome; only "
                             "--world_model oracle does")
        return np.asarray(imagination.outcome, dtype=np.float64)


class GoalLatentScorer:
    """Negative Euclidean distance between each candidate's last imagined latent and ``goal_latent``."""
    name = "goal_latent"

    def __init__(self, goal_latent: np.ndarray):
        self.goal_latent = np.asarray(goal_latent, dtype=np.float64)

    @classmethod
    def from_image(cls, path: str, world_model, spec: EmbodimentSpec) -> "GoalLatentScorer":
        """The goal from an image file: the spec's cameras side by side (as the rollout video shows them)."""
        from PIL import Image

        try:
            image = np.asarray(Image.open(path).convert("RGB"))
        except (OSError, ValueError) as err:
            raise UsageError(f"--goal_image: cannot read '{path}' as an image ({err})") from err
        widths = [c.width for c in spec.cameras]
        if image.shape[:2] != (spec.cameras[0].height, sum(widths)):
            raise UsageError(f"--goal_image: '{path}' is {image.shape[0]}x{image.shape[1]}; embodiment "
                             f"'{spec.name}' needs its cameras {spec.camera_names} side by side: "
                             f"{spec.cameras[0].height}x{sum(widths)}")
        edges = np.cumsum([0, *widths])
        images = {c.name: np.ascontiguousarray(image[:, edges[i]:edges[i + 1]]) for i, c in enumerate(spec.cameras)}
        return cls(world_model.encode({"images": images, "state": None}, spec))

    def score(self, imagination: Imagination, instruction: str, spec: EmbodimentSpec,
              rng: np.random.Generator) -> np.ndarray:
        last = np.asarray(imagination.latents, dtype=np.float64)[:, -1].reshape(len(imagination.latents), -1)
        return -np.linalg.norm(last - self.goal_latent.reshape(1, -1), axis=1)


def sample_disagreement(imagination: Imagination) -> np.ndarray:
    """``[K]``: mean over frames and latent entries of the standard deviation across a candidate's samples."""
    samples = imagination.info.get(SAMPLE_LATENTS)
    if samples is None:
        raise UsageError(f"--uncertainty_penalty: the world model imagines one sample per candidate; the penalty "
                         f"needs several (Imagination.info['{SAMPLE_LATENTS}'] [K, S, F, ...])")
    samples = np.asarray(samples, dtype=np.float64)
    return samples.reshape(samples.shape[0], samples.shape[1], -1).std(axis=1).mean(axis=1)


class UncertaintyPenalty:
    """``base`` score minus ``weight`` x :func:`sample_disagreement`: a large K cannot pick a candidate
    only because the world model is unsure (and one of its samples happened to look good)."""

    def __init__(self, base, weight: float):
        self.base, self.weight = base, float(weight)
        self.name = f"{base.name}+uncertainty({weight:g})"

    def score(self, imagination: Imagination, instruction: str, spec: EmbodimentSpec,
              rng: np.random.Generator) -> np.ndarray:
        return (self.base.score(imagination, instruction, spec, rng)
                - self.weight * sample_disagreement(imagination))


# name -> factory(world_model, spec, goal_image, scorer_model) -> Scorer
_REGISTRY: dict[str, Callable] = {}


def register_scorer(name: str, factory: Callable) -> None:
    """Make ``--scorer name`` build ``factory(world_model=..., spec=..., goal_image=..., scorer_model=...)``."""
    _REGISTRY[name] = factory


def _goal_latent(world_model, spec, goal_image, **_):
    if goal_image is None:
        raise UsageError("--scorer goal_latent needs --goal_image PATH (the goal as the cameras see it)")
    if world_model is None:
        raise UsageError("--scorer goal_latent needs a --world_model to encode the goal image and imagine futures")
    return GoalLatentScorer.from_image(goal_image, world_model, spec)


register_scorer("random", lambda **_: RandomScorer())
register_scorer("oracle_outcome", lambda **_: OracleOutcomeScorer())
register_scorer("goal_latent", _goal_latent)


def _progress(**kw):
    from world_model.progress import scorer_from_args  # torch/diffusers: imported when the scorer is used
    return scorer_from_args(**kw)


register_scorer("progress", _progress)


def scorer_names() -> list[str]:
    return sorted(_REGISTRY)


def make_scorer(name: str, world_model=None, spec: EmbodimentSpec | None = None, goal_image: str | None = None,
                uncertainty_penalty: float = 0.0, scorer_model: str | None = None):
    """The scorer ``name`` (optionally wrapped in :class:`UncertaintyPenalty`); unknown names are a UsageError."""
    if name not in _REGISTRY:
        raise UsageError(f"--scorer: unknown scorer '{name}'; known: {scorer_names()}")
    if uncertainty_penalty < 0:
        raise UsageError(f"--uncertainty_penalty must be >= 0, got {uncertainty_penalty}")
    scorer = _REGISTRY[name](world_model=world_model, spec=spec, goal_image=goal_image, scorer_model=scorer_model)
    return UncertaintyPenalty(scorer, uncertainty_penalty) if uncertainty_penalty else scorer
