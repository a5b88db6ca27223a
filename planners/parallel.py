"""Episodes in N environments at once: a gymnasium ``AsyncVectorEnv`` steps them in worker processes
and the VLA decides for every environment that needs a chunk in one batched call.

Each environment runs the same seeded episode that :func:`planners.episode.run_episode` runs alone
(same reset seed, same per-decision noise seeds through ``Policy.sample_batch``), so results match
``--num_envs 1`` up to floating-point differences of batched kernels (docs/ARCHITECTURE.md, "Parallel
evaluation").
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np

from components.embodiment import EmbodimentSpec
from planners.episode import EpisodeRecord, policy_seed
from planners.executors import make_executor_for


def _make_env(env_id: str, env_kwargs: dict):
    """Runs in a worker process: registers the project's envs, then builds one."""
    import os
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYGLET_HEADLESS", "true")
    import gymnasium as gym

    import components.envs  # noqa: F401  (registers vla_stack/*)
    env = gym.make(env_id, **env_kwargs)
    if not hasattr(env.unwrapped, "max_reward"):  # read through get_attr: a missing one stops the workers
        env.unwrapped.max_reward = None
    return env


def _index(tree, i: int):
    """Element ``i`` of a batched observation (nested dicts of arrays)."""
    if isinstance(tree, dict):
        return {k: _index(v, i) for k, v in tree.items()}
    return tree[i]


def _info(infos: dict, i: int) -> dict:
    """Environment ``i``'s info from a vector env's batched info dict (keys with their ``_key`` masks)."""
    out = {}
    for k, v in infos.items():
        if k.startswith("_"):
            continue
        mask = infos.get("_" + k)
        if mask is None or mask[i]:
            out[k] = _info(v, i) if isinstance(v, dict) else v[i]
    return out


@dataclass
class _Slot:
    """One environment's current episode."""
    rec: EpisodeRecord
    executor: object
    obs: dict
    calls: int = 0
    done: bool = False


def run_parallel(env_id: str, env_kwargs: dict | None, policy, embodiment: str, spec: EmbodimentSpec,
                 seeds: list[int], num_envs: int, *, execute_horizon: int, temporal_ensemble: bool = False,
                 ensemble_decay: float = 0.01, max_steps: int | None = None, num_flow_steps: int | None = None,
                 on_episode=None) -> tuple[list[EpisodeRecord], bool]:
    """The episodes of ``seeds`` (records in seed order), ``num_envs`` at a time, and whether the env's
    reward is staged (an integer ``max_reward``); ``on_episode(rec)`` as each finishes. A decision's
    ``policy_ms`` is the batched call's time, shared by the envs in it."""
    from gymnasium.vector import AsyncVectorEnv, AutoresetMode

    num_envs = min(num_envs, len(seeds))
    make = functools.partial(_make_env, env_id, dict(env_kwargs or {}))
    envs = AsyncVectorEnv([make] * num_envs, context="spawn", autoreset_mode=AutoresetMode.DISABLED)
    try:
        box = envs.single_action_space
        dt = float(envs.get_attr("dt")[0]) if spec.action_kind == "waypoints" else 1.0 / spec.control_hz
        low, high = box.low, box.high
        staged = isinstance(envs.get_attr("max_reward")[0], int)
        pending = list(seeds)
        slots: list[_Slot | None] = [None] * num_envs
        records: dict[int, EpisodeRecord] = {}

        def start(mask: np.ndarray) -> None:
            chosen = [pending.pop(0) if m else None for m in mask]
            obs, infos = envs.reset(seed=chosen, options={"reset_mask": mask})
            for i in np.flatnonzero(mask):
                info = _info(infos, i)
                instruction = info.get("instruction") or envs.get_attr("instruction")[i]
                if not instruction:
                    raise ValueError(f"env {env_id} gives no instruction (info['instruction'] after reset)")
                slots[i] = _Slot(EpisodeRecord(seed=chosen[i], instruction=instruction),
                                 make_executor_for(spec, box, dt, execute_horizon, temporal_ensemble, ensemble_decay),
                                 _index(obs, i))

        start(np.ones(num_envs, dtype=bool))
        while any(s is not None and not s.done for s in slots):
            need = [i for i, s in enumerate(slots) if s is not None and not s.done and s.executor.needs_chunk()]
            if need:
                t0 = time.perf_counter()
                outs = policy.sample_batch(
                    [(slots[i].obs, embodiment, slots[i].rec.instruction) for i in need],
                    seeds=[policy_seed(slots[i].rec.seed, slots[i].calls) for i in need], num_steps=num_flow_steps)
                ms = (time.perf_counter() - t0) * 1e3
                for i, out in zip(need, outs):
                    s = slots[i]
                    s.executor.set_chunk(out.chunks[0])
                    s.calls += 1
                    s.rec.policy_ms.append(ms)
                    s.rec.decision_ms.append(ms)
                    s.rec.clipped_actions += out.clipped
                    s.rec.nonfinite_actions += out.nonfinite
            actions = np.zeros((num_envs,) + box.shape, dtype=box.dtype)
            for i, s in enumerate(slots):
                if s is not None and not s.done:
                    actions[i] = np.clip(s.executor.action(), low, high)
            obs, rewards, terminated, truncated, infos = envs.step(actions)
            finished = np.zeros(num_envs, dtype=bool)
            for i, s in enumerate(slots):
                if s is None or s.done:
                    continue
                info = _info(infos, i)
                rec = s.rec
                rec.steps += 1
                rec.ret += float(rewards[i])
                rec.max_reward = max(rec.max_reward, float(rewards[i]))
                rec.success = bool(info.get("is_success", False))
                at_cap = max_steps is not None and rec.steps >= max_steps
                s.obs = _index(obs, i)
                if terminated[i] or truncated[i] or at_cap:
                    rec.end = "terminated" if terminated[i] else "truncated" if truncated[i] else "max_steps"
                    rec.replans = len(rec.policy_ms) - 1
                    s.done = True
                    records[rec.seed] = rec
                    if on_episode:
                        on_episode(rec)
                    finished[i] = True
            refill = finished & np.array([bool(pending)] * num_envs)
            if refill.any():
                refill &= np.cumsum(refill) <= len(pending)
                start(refill)
        return [records[s] for s in seeds], staged
    finally:
        envs.close()
