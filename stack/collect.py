"""``vla-stack collect``: scripted-expert demonstrations of a simulated task into an episode store.

One store holds one environment. Episode seeds are deterministic: the candidate seeds are
``seed, seed + 1, seed + 2, ...`` in order, seeds already in the store are skipped, and an
episode the expert fails is discarded (its seed is tried again, and fails again, on a later
run). An episode whose state or expert action leaves the ranges its embodiment declares is
discarded the same way (physics can overshoot a declared limit by a little), with its reason in
the log and the summary; past ``max_discarded`` the run stops with the reasons, which is how a
misconfigured embodiment shows up. So the store holds the first N seeds on which the expert
succeeds within range, and running the same command again completes it to N episodes without
duplicates. Each frame records the seed of
its episode in ``data/episode_seed`` [T] int64.

Workers (spawned processes, each with its own env) only *produce* episodes; the parent process
is the only writer and appends them in seed order, so a killed run leaves a valid store
(:class:`~components.episode_store.EpisodeStore` commits whole episodes only).

What a frame holds is the embodiment's: each scripted expert's ``record`` (see
``components.envs.experts``) documents its frames (``images/<cam>`` at the spec's camera size
everywhere); ``success[t]``, where recorded, says whether the task is achieved in the observation
of frame t.

``noise`` (DART, Laskey et al. 2017): the executed action is the expert's plus noise while the
recorded label stays the expert's clean action, so the data shows how the expert recovers from the
small drifts a learned policy makes; each expert's ``record`` says how it perturbs. Perturbed
episodes the expert fails are discarded like any other.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from components.embodiment import EmbodimentError, EmbodimentSpec
from components.envs.experts import ExpertEpisode, make_env_and_expert
from components.envs.experts import env_spec as _env_spec
from components.errors import UsageError, VLAStackError

SEED_KEY = "episode_seed"
#: attribute of the store's root group naming what produced it (env id and kwargs)
SOURCE_ATTR = "collect"


# ---------------------------------------------------------------------------------- producers


class EpisodeProducer:
    """Builds one env for ``env_id`` and its scripted expert, and turns a seed into one expert
    episode: its ``frames`` (with the seed of every frame) when it is worth storing, else None."""

    def __init__(self, env_id: str, env_kwargs: dict, noise: float = 0.0, noise_steps: int | None = None):
        self.spec = _env_spec(env_id)
        self.noise = float(noise)
        self.noise_steps = noise_steps
        self.env, self.expert = make_env_and_expert(env_id, self.spec, env_kwargs, noise_steps)

    def __call__(self, seed: int) -> ExpertEpisode:
        episode = self.expert.record(self.env, seed, noise=self.noise, noise_steps=self.noise_steps)
        episode.executed = None  # not stored
        if episode.success and episode.steps > 0:
            episode.frames[SEED_KEY] = np.full(episode.steps, seed, dtype=np.int64)
        else:
            episode.frames = None
        return episode

    def close(self) -> None:
        self.env.close()


# ---------------------------------------------------------------------------------- workers

_WORKER: EpisodeProducer | None = None


class TooManyDiscardedError(VLAStackError, RuntimeError):
    """More episodes discarded than ``--max_discarded`` allows (a failing expert or a misdeclared range)."""


def _init_worker(env_id: str, env_kwargs: dict, noise: float, noise_steps: int | None) -> None:
    global _WORKER
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    _WORKER = EpisodeProducer(env_id, env_kwargs, noise, noise_steps)


def _exit_with_parent(parent_pid: int) -> None:
    # A killed parent leaves pool workers waiting on their task queue forever.
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)


def _produce_in_worker(seed: int) -> ExpertEpisode:
    return _WORKER(seed)


def _produce_in_order(env_id: str, env_kwargs: dict, noise: float, seeds: Iterator[int], workers: int,
                      still_needed: Callable[[], int], noise_steps: int | None = None) -> Iterator[ExpertEpisode]:
    """Episodes of ``seeds`` in seed order, produced by ``workers`` processes (1: this process).

    ``still_needed()`` is how many more successful episodes the caller wants; at most that
    many seeds, and at most two per worker (one running, one queued), are in flight.
    """
    if still_needed() <= 0:
        return
    if workers == 1:
        producer = EpisodeProducer(env_id, env_kwargs, noise, noise_steps)
        try:
            for seed in seeds:
                if still_needed() <= 0:
                    return
                yield producer(seed)
        finally:
            producer.close()
        return
    pending: deque[Future] = deque()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                             initargs=(env_id, env_kwargs, noise, noise_steps)) as pool:
        try:
            while True:
                while len(pending) < 2 * workers and len(pending) < still_needed():
                    pending.append(pool.submit(_produce_in_worker, next(seeds)))
                if not pending:
                    return
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


# ---------------------------------------------------------------------------------- store


def _out_of_range(spec: EmbodimentSpec, produced: ExpertEpisode, env_id: str) -> str | None:
    """Why the episode's expert action or env state leaves the embodiment's ranges (None: it does not)."""
    where = f"{env_id} seed {produced.seed}"
    try:
        spec.check_range("action", produced.frames["action"], f"{where} (expert action)")
        spec.check_range("state", produced.frames["state"], f"{where} (env state)")
    except EmbodimentError as e:
        return str(e)
    return None


def _check_cameras(spec: EmbodimentSpec, produced: ExpertEpisode, env_id: str) -> None:
    where = f"{env_id} seed {produced.seed}"
    for camera in spec.cameras:
        shape = produced.frames["images"][camera.name].shape[1:3]
        if shape != (camera.height, camera.width):
            raise ValueError(f"{where}: camera {camera.name!r} renders {shape[0]}x{shape[1]} but "
                             f"embodiment {spec.name!r} ({spec.source}) declares "
                             f"{camera.height}x{camera.width}")


def _open_store(out: str, env_id: str, env_kwargs: dict, spec: EmbodimentSpec, noise: float = 0.0,
                noise_steps: int | None = None):
    """The store at ``out`` (created if absent) and the seeds it already holds."""
    from components.episode_store import open_for_append

    source = {"env_id": env_id, "env_kwargs": env_kwargs}
    if noise:
        source["noise"] = noise
    if noise and noise_steps is not None:
        source["noise_steps"] = noise_steps
    store = open_for_append(out, spec, SOURCE_ATTR, source, "--out", env_id)
    seeds: set[int] = set()
    if store.n_episodes:
        seeds = {int(s) for s in store.lowdim(SEED_KEY)[store.episode_ends - 1]}
    return store, seeds


# ---------------------------------------------------------------------------------- command


def collect(env: str, episodes: int, out: str, workers: int = 1, seed: int = 0,
            env_kwargs: dict | None = None, max_discarded: int | None = None, noise: float = 0.0,
            noise_steps: int | None = None) -> dict:
    """Record scripted-expert episodes of a simulated task into an episode store (zarr).

    Episode seeds are ``seed, seed + 1, ...``; failed expert episodes are discarded and the next
    seed is tried. Running the same command again skips the seeds already stored and completes
    the store to ``episodes`` episodes. Workers produce episodes; this process alone writes them,
    in seed order, so an interrupted run leaves a valid store.

    Args:
        env: environment id, e.g. vla_stack/FetchReach-v0, vla_stack/WheeledHallway-v0,
            vla_stack/AlohaTransferCube-v0.
        episodes: number of successful episodes the store should hold.
        out: episode store path (``.zarr``); created, or completed if it exists.
        workers: processes producing episodes (each builds its own env); 1 runs in this process.
        seed: first episode seed.
        env_kwargs: keyword arguments of ``gym.make`` (default none), e.g. ``{floorplan: office_small}``.
        max_discarded: stop with an error after this many discarded episodes, failed or out of the
            embodiment's ranges (default: max(10, episodes)).
        noise: DART noise injected into the executed expert actions (labels stay clean): std of
            the Fetch dx/dy/dz, the fraction of the max turn rate for the wheeled base, or the
            std (rad) of the ALOHA arm-joint targets' perturbation; 0 = none.
        noise_steps: ALOHA only: perturb during one window of this many steps per episode (at a
            seeded random start) instead of the whole replay.
    """
    from tqdm import tqdm

    env_kwargs = dict(env_kwargs or {})
    if episodes < 1 or workers < 1:
        raise UsageError(f"--episodes and --workers must be >= 1, got {episodes} and {workers}")
    if not 0.0 <= noise <= 1.0:
        raise UsageError(f"--noise must be in [0, 1], got {noise}")
    if noise_steps is not None and noise_steps < 1:
        raise UsageError(f"--noise_steps must be >= 1 (or unset: the whole episode), got {noise_steps}")
    spec = _env_spec(env)
    store, stored_seeds = _open_store(out, env, env_kwargs, spec, noise, noise_steps)
    start_episodes = store.n_episodes
    limit = max(10, episodes) if max_discarded is None else max_discarded
    discarded: list[int] = []
    out_of_range: dict[int, str] = {}
    written = steps = 0

    def still_needed() -> int:
        return episodes - store.n_episodes

    candidates = (s for s in range(seed, seed + 2**31) if s not in stored_seeds)
    t0 = time.perf_counter()
    bar = tqdm(total=max(episodes - start_episodes, 0), unit="ep", desc=env, dynamic_ncols=True)
    produced_episodes = _produce_in_order(env, env_kwargs, noise, candidates, workers, still_needed, noise_steps)
    try:
        for produced in produced_episodes:
            steps += produced.steps
            reason = None if produced.frames is None else _out_of_range(spec, produced, env)
            if reason is not None:
                out_of_range[produced.seed] = reason
                bar.write(f"discarded: {reason}")
            if produced.frames is None or reason is not None:
                discarded.append(produced.seed)
                if len(discarded) > limit:
                    reasons = "".join(f"\n  {r}" for r in out_of_range.values())
                    raise TooManyDiscardedError(
                        f"{env}: discarded {len(discarded)} seed(s) {discarded} (expert failed, or out of the "
                        f"declared ranges:{reasons or ' none'}); stopping (raise --max_discarded to go on); the "
                        f"{store.n_episodes} whole episode(s) in {out} are kept and a rerun resumes from them")
            else:
                _check_cameras(spec, produced, env)
                store.append_episode(produced.frames, produced.instruction)
                written += 1
                bar.update(1)
            bar.set_postfix(steps_per_s=f"{steps / (time.perf_counter() - t0):.0f}",
                            discarded=len(discarded))
    finally:
        produced_episodes.close()
        bar.close()
    seconds = time.perf_counter() - t0
    summary = {
        "env": env, "out": out, "workers": workers, "written": written,
        "episodes": store.n_episodes, "requested": episodes, "discarded": len(discarded),
        "discarded_seeds": discarded, "out_of_range_seeds": sorted(out_of_range), "frames": store.n_frames, "seconds": round(seconds, 2),
        "env_steps": steps, "env_steps_per_s": round(steps / seconds, 1) if seconds > 0 else None,
    }
    failed = f" (seeds {discarded}; out of the declared ranges: {sorted(out_of_range)})" if discarded else ""
    print(f"{env} -> {out}: wrote {written} episodes ({store.n_episodes}/{episodes} in the store), "
          f"discarded {len(discarded)} episodes{failed}; "
          f"{store.n_frames} frames in the store; {seconds:.1f} s, {steps} env steps, "
          f"{summary['env_steps_per_s']} env steps/s with {workers} worker(s)")
    return summary
