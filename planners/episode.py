"""The closed-loop episode: *decide* a chunk, *execute* it step by step, repeat.

A :class:`Decider` turns an observation into a chunk ``[H, A]`` and sees every executed step through
``on_step``; returning True there cuts the rest of the chunk (the verify step of imagine-execute-verify
uses this to replan on surprise). :class:`PolicyDecider` is the plain VLA: one sample per decision.
:func:`run_episode` is what ``vla-stack run`` calls per seed; the CLI only adds argument checks,
result files and videos (docs/ARCHITECTURE.md).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np

from components.embodiment import EmbodimentSpec
from planners.executors import default_execute_horizon, make_executor


@dataclass
class Decision:
    """A chunk ``[H, A]`` in the embodiment's units, with what producing it cost and how much was clipped."""
    chunk: np.ndarray
    policy_ms: float = 0.0
    clipped: int = 0      # action values the Policy clipped to the spec's declared range
    nonfinite: int = 0    # non-finite action values the Policy replaced with the spec's safe action
    record: dict | None = None  # what the decider wants kept per decision (scores, choice, surprise ...)


class Decider(Protocol):
    def reset(self, episode_seed: int) -> None:
        """Start an episode (seeds the decisions that follow)."""

    def decide(self, obs: dict, instruction: str) -> Decision:
        """The chunk to execute from ``obs``."""

    def on_step(self, obs: dict, action: np.ndarray, reward: float, info: dict) -> bool:
        """Called after every executed step; True cuts the current chunk (replan at the next step)."""


def policy_seed(episode_seed: int, call: int) -> int:
    """Noise seed of the ``call``-th decision of an episode: reproducible and distinct per call."""
    return int(np.random.SeedSequence([episode_seed, call]).generate_state(1)[0])


class PolicyDecider:
    """The VLA alone: one chunk per decision from ``policy.sample_limited``, noise seeded per call."""

    def __init__(self, policy, embodiment: str, num_flow_steps: int | None = None):
        self.policy = policy
        self.embodiment = embodiment
        self.num_flow_steps = num_flow_steps
        self.episode_seed = 0
        self.calls = 0

    def reset(self, episode_seed: int) -> None:
        self.episode_seed, self.calls = episode_seed, 0

    def decide(self, obs: dict, instruction: str) -> Decision:
        t0 = time.perf_counter()
        out = self.policy.sample_limited(obs, self.embodiment, instruction, num_samples=1,
                                         num_steps=self.num_flow_steps,
                                         seed=policy_seed(self.episode_seed, self.calls))
        self.calls += 1
        return Decision(out.chunks[0], (time.perf_counter() - t0) * 1e3, out.clipped, out.nonfinite)

    def on_step(self, obs: dict, action: np.ndarray, reward: float, info: dict) -> bool:
        return False


@dataclass
class EpisodeRecord:
    seed: int
    success: bool = False
    steps: int = 0
    ret: float = 0.0
    max_reward: float = 0.0  # the best stage reached where the reward is staged (aloha: 4 = success)
    replans: int = 0            # scheduled: a new chunk because the executed part of the last one ran out
    surprise_replans: int = 0   # the decider cut the chunk (verify: reality differed from the imagination)
    end: str = ""  # "terminated", "truncated" (by the env) or "max_steps" (by the runner)
    instruction: str = ""
    clipped_actions: int = 0
    nonfinite_actions: int = 0
    policy_ms: list[float] = field(default_factory=list)
    decision_ms: list[float] = field(default_factory=list)
    decisions: list[dict] = field(default_factory=list)  # Decision.record of each decision that has one

    def to_json(self) -> dict:
        d = asdict(self)
        d["return"] = d.pop("ret")
        return d


def run_episode(env, decider: Decider, spec: EmbodimentSpec, seed: int, *,
                execute_horizon: int | None = None, temporal_ensemble: bool = False,
                ensemble_decay: float = 0.01, max_steps: int | None = None, on_frame=None,
                on_step=None) -> EpisodeRecord:
    """One seeded episode; ``on_frame(obs, info, record, done)`` is called after reset and every step,
    ``on_step(obs, action, reward, next_obs, info)`` after every step (``action`` as executed).

    Env actions are clipped to the env's action space; success is ``info["is_success"]`` of the last step.
    """
    executor = make_executor(spec, env, execute_horizon or default_execute_horizon(spec), temporal_ensemble,
                             ensemble_decay)
    obs, info = env.reset(seed=seed)
    instruction = info.get("instruction") or getattr(env.unwrapped, "instruction", "")
    if not instruction:
        raise ValueError(f"env {env.spec.id if env.spec else env} gives no instruction "
                         f"(info['instruction'] after reset)")
    decider.reset(seed)
    if hasattr(decider, "begin_episode"):  # optional: a decider whose world model needs the env
        decider.begin_episode(env)
    rec = EpisodeRecord(seed=seed, instruction=instruction)
    low, high = env.action_space.low, env.action_space.high
    if on_frame:
        on_frame(obs, info, rec, False)
    while True:
        if executor.needs_chunk():
            t0 = time.perf_counter()
            decision = decider.decide(obs, instruction)
            executor.set_chunk(decision.chunk)
            rec.policy_ms.append(decision.policy_ms)
            rec.decision_ms.append((time.perf_counter() - t0) * 1e3)
            rec.clipped_actions += decision.clipped
            rec.nonfinite_actions += decision.nonfinite
            if decision.record is not None:
                rec.decisions.append(decision.record)
        action = np.clip(executor.action(), low, high).astype(env.action_space.dtype)
        prev_obs = obs
        obs, reward, terminated, truncated, info = env.step(action)
        rec.steps += 1
        rec.ret += float(reward)
        rec.max_reward = max(rec.max_reward, float(reward))
        rec.success = bool(info.get("is_success", False))
        at_cap = max_steps is not None and rec.steps >= max_steps
        done = terminated or truncated or at_cap
        if done:
            rec.end = "terminated" if terminated else "truncated" if truncated else "max_steps"
        if on_step:
            on_step(prev_obs, action, float(reward), obs, info)
        if on_frame:
            on_frame(obs, info, rec, done)
        replan = decider.on_step(obs, action, float(reward), info)
        if done:
            break
        if replan:
            executor.cut()
            rec.surprise_replans += 1
    rec.replans = len(rec.policy_ms) - 1 - rec.surprise_replans
    return rec
