"""One interface to the scripted experts: a seed in, an episode for the episode store out.

Each expert class (``FetchExpert``, ``WheeledExpert``, ``AlohaExpert``) is built for an env by
``from_spec(env, spec)`` and records an episode with ``record(env, seed, noise=0.0,
noise_steps=None) -> ExpertEpisode``; ``noise_window`` says whether it takes ``noise_steps``. The
registry ``EXPERTS`` names the class of each embodiment, so callers (``vla-stack collect``,
:func:`measure_expert`) need no per-robot code.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from components.errors import UsageError
from components.embodiment import EmbodimentSpec, Embodiments

#: scripted expert class of each embodiment ("module:class", imported when used)
EXPERTS = {
    "fetch": "components.envs.fetch_expert:FetchExpert",
    "wheeled": "components.envs.wheeled_expert:WheeledExpert",
    "wheeled_nav": "components.envs.wheeled_expert:WheeledExpert",  # the env's subgoal route is the expert's
    "aloha": "components.envs.aloha_expert:AlohaExpert",
}


@dataclass
class ExpertEpisode:
    """One expert episode.

    ``frames``: what ``EpisodeStore.append_episode`` takes (``action``, ``state`` and
    ``images/<cam>`` [T, ...], plus the embodiment's extras); None when the episode has no step.
    ``executed``: the actions really sent to the env [T, A] (the labels plus any DART noise).
    ``success``: whether the task was achieved, judged as the embodiment's env judges it.
    """

    seed: int
    steps: int
    success: bool
    instruction: str = ""
    frames: dict | None = field(default=None, repr=False)
    executed: np.ndarray | None = field(default=None, repr=False)


def stack_frames(frames: list[dict]) -> dict:
    """Per-step dicts of arrays (``images`` a dict of cameras) -> one dict of [T, ...] arrays."""
    out = {}
    for key, first in frames[0].items():
        if isinstance(first, dict):
            out[key] = {c: np.stack([f[key][c] for f in frames]) for c in first}
        else:
            out[key] = np.stack([f[key] for f in frames])
    return out


def env_spec(env_id: str) -> EmbodimentSpec:
    """The embodiment spec (configs/embodiments/<name>.yaml) of the robot of ``env_id``."""
    import components.envs as envs

    if env_id not in envs.EMBODIMENT_OF:
        raise UsageError(f"--env: unknown environment {env_id!r}; known: {sorted(envs.EMBODIMENT_OF)}")
    name = envs.embodiment_of(env_id)
    return Embodiments.from_config_dir([name])[name]


def expert_class(embodiment: str) -> type:
    """The scripted expert class of ``embodiment`` (see ``EXPERTS``)."""
    if embodiment not in EXPERTS:
        raise UsageError(f"no scripted expert for embodiment {embodiment!r}; experts: {sorted(EXPERTS)}")
    module, name = EXPERTS[embodiment].split(":")
    return getattr(importlib.import_module(module), name)


def make_env_and_expert(env_id: str, spec: EmbodimentSpec, env_kwargs: dict | None = None,
                        noise_steps: int | None = None):
    """The env of ``env_id`` rendering the spec's cameras at their size (``env_kwargs`` override),
    and its scripted expert. Raises if the expert cannot take a ``noise_steps`` window."""
    import gymnasium as gym

    import components.envs  # noqa: F401  (registers the ids)

    try:
        cls = expert_class(spec.name)
    except ValueError as e:
        raise UsageError(f"--env {env_id}: {e}") from None
    if noise_steps is not None and not cls.noise_window:
        windowed = ", ".join(n for n in EXPERTS if expert_class(n).noise_window)
        raise UsageError(f"{env_id}: --noise_steps (a window of noise) is for {windowed}; {spec.name} is "
                         f"perturbed throughout with --noise")
    camera = spec.cameras[0]
    kwargs = {"image_size": (camera.height, camera.width), "cameras": tuple(spec.camera_names),
              **(env_kwargs or {})}
    env = gym.make(env_id, **kwargs)
    return env, cls.from_spec(env, spec)


def measure_expert(env_id: str, seeds: Sequence[int] = range(100), noise: float = 0.0,
                   noise_steps: int | None = None, **env_kwargs) -> dict:
    """Success rate of the scripted expert of ``env_id``, one episode per seed recorded as
    ``vla-stack collect`` records it, and env steps/s (rendering the spec's cameras unless
    ``env_kwargs`` say otherwise, e.g. ``image_size=(8, 8)``)."""
    env, expert = make_env_and_expert(env_id, env_spec(env_id), env_kwargs, noise_steps)
    seeds = list(seeds)
    succ, steps = [], []
    t0 = time.perf_counter()
    try:
        for seed in seeds:
            episode = expert.record(env, seed, noise=noise, noise_steps=noise_steps)
            succ.append(episode.success)
            steps.append(episode.steps)
    finally:
        env.close()
    seconds = time.perf_counter() - t0
    total = int(sum(steps))
    return {
        "env_id": env_id,
        "env_kwargs": {k: str(v) for k, v in env_kwargs.items()},
        "noise": noise,
        "noise_steps": noise_steps,
        "episodes": len(seeds),
        "successes": int(sum(succ)),
        "success_rate": float(np.mean(succ)) if seeds else 0.0,
        "failed_seeds": [s for s, ok in zip(seeds, succ) if not ok],
        "mean_steps": float(np.mean(steps)) if seeds else 0.0,
        "steps": total,
        "steps_per_s": total / seconds if seconds > 0 else float("nan"),
        "seeds": seeds,
    }
