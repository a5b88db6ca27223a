"""Closed-loop evaluation: ``vla-stack run --env ID --policy DIR`` connects a simulation env and a
policy, runs seeded episodes and writes the run result of DESIGN.md.

One episode (seed ``S + i``): reset the env with that seed, then repeat
*decide* (``policy.sample`` -> ``[K, H, A]``, candidate 0 is executed: there is no world model to
rank candidates yet) and *execute* until the env terminates or truncates (or ``max_steps``).
How a chunk becomes env actions depends on the embodiment's action kind, and so does the default
``execute_horizon`` (env steps per decision):

* ``absolute_joints``: the first ``execute_horizon`` actions, then replan; default H / 2 (aloha: 25
  of 50 = 0.5 s; absolute joint targets far ahead go stale, as in ACT / pi0 evaluations).
* ``ee_delta``: the same; default H (fetch: the whole chunk, 10 steps = 0.4 s).
* ``waypoints``: ``planners.follower`` turns the chunk of waypoints into (v, omega) every env step and
  a new chunk is predicted every ``execute_horizon`` env steps; default one waypoint spacing
  (wheeled: 5 x 0.1 s = 0.5 s).

``temporal_ensemble`` (ACT): query the policy every step and execute the average of all chunks
that cover this step, weighted ``exp(-decay * i)`` with i = 0 for the oldest chunk. It applies to
action chunks only (waypoints are in the frame of the robot at prediction time and cannot be
averaged across steps without a pose). Default: on for ``ee_delta`` (fetch: the stage-5b
generalist reached 23/50 Fetch reach targets with it against 13/50 executing whole chunks; push
3/50 against 4/50, docs/RESULTS.md), off for the others (aloha: a decision every step makes its
400-step episodes 25 times as slow to evaluate, and the stage-7 generalist got 1/20 with it against
2/20 chunked, docs/RESULTS.md "Stage 7"); an explicit ``execute_horizon`` means chunked execution.

Actions are clipped to the env's action space. Success is ``info["is_success"]`` of the last step
(the envs that terminate on success end on the successful step).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYGLET_HEADLESS", "true")

import numpy as np  # noqa: E402

from components.embodiment import EmbodimentSpec  # noqa: E402
from components.errors import CheckpointNotFoundError, UsageError  # noqa: E402
from planners.follower import FollowerConfig, WaypointFollower  # noqa: E402
from stack.results import (  # noqa: E402
    MIN_VIDEO_HEIGHT,
    VideoWriter,
    annotate,
    latency_summary,
    summary_line,
    wilson_interval,
    wrap_text,
    write_json,
)


def default_execute_horizon(spec: EmbodimentSpec) -> int:
    """Env steps executed per decision (see the table in the module docstring)."""
    if spec.action_kind == "waypoints":
        return max(1, round((spec.waypoint_spacing_s or 1.0 / spec.control_hz) * spec.control_hz))
    if spec.action_kind == "absolute_joints":
        return max(1, spec.chunk_horizon // 2)
    return spec.chunk_horizon


def default_temporal_ensemble(spec: EmbodimentSpec) -> bool:
    """Whether ``run`` ensembles chunks when the caller does not say (see the module docstring)."""
    return spec.action_kind == "ee_delta"


def max_execute_horizon(spec: EmbodimentSpec) -> int:
    if spec.action_kind == "waypoints":
        return default_execute_horizon(spec) * spec.chunk_horizon
    return spec.chunk_horizon


# ----------------------------------------------------------------------------- chunk execution
class ChunkExecutor:
    """Execute the first ``execute_horizon`` actions of each chunk ``[H, A]``, then ask for a new one."""

    def __init__(self, execute_horizon: int):
        self.execute_horizon = execute_horizon
        self.queue: deque[np.ndarray] = deque()

    def needs_chunk(self) -> bool:
        return not self.queue

    def set_chunk(self, chunk: np.ndarray) -> None:
        self.queue = deque(chunk[: self.execute_horizon])

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

    def action(self) -> np.ndarray:
        self.left -= 1
        return self.follower.command()


def make_executor(spec: EmbodimentSpec, env, execute_horizon: int, temporal_ensemble: bool,
                  ensemble_decay: float):
    if spec.action_kind == "waypoints":
        box = env.action_space
        cfg = FollowerConfig(v_min=float(box.low[0]), v_max=float(box.high[0]), w_max=float(box.high[1]),
                             dt_s=float(getattr(env.unwrapped, "dt", 1.0 / spec.control_hz)),
                             spacing_s=float(spec.waypoint_spacing_s or 1.0 / spec.control_hz))
        return WaypointExecutor(execute_horizon, WaypointFollower(cfg))
    if temporal_ensemble:
        return TemporalEnsemble(spec.chunk_horizon, ensemble_decay)
    return ChunkExecutor(execute_horizon)


# ----------------------------------------------------------------------------- episodes
@dataclass
class EpisodeRecord:
    seed: int
    success: bool = False
    steps: int = 0
    ret: float = 0.0
    max_reward: float = 0.0  # the best stage reached where the reward is staged (aloha: 4 = success)
    replans: int = 0
    end: str = ""  # "terminated", "truncated" (by the env) or "max_steps" (by the runner)
    instruction: str = ""
    policy_ms: list[float] = field(default_factory=list)
    decision_ms: list[float] = field(default_factory=list)

    def to_json(self) -> dict:
        d = asdict(self)
        d["return"] = d.pop("ret")
        return d


def policy_seed(episode_seed: int, call: int) -> int:
    """Noise seed of the ``call``-th decision of an episode: reproducible and distinct per call."""
    return int(np.random.SeedSequence([episode_seed, call]).generate_state(1)[0])


def run_episode(env, policy, spec: EmbodimentSpec, seed: int, *, candidates: int = 1,
                execute_horizon: int | None = None, temporal_ensemble: bool = False,
                ensemble_decay: float = 0.01, max_steps: int | None = None, num_flow_steps: int | None = None,
                on_frame=None) -> EpisodeRecord:
    """One seeded episode; ``on_frame(obs, info, record, done)`` is called after reset and every step."""
    horizon = execute_horizon or default_execute_horizon(spec)
    executor = make_executor(spec, env, horizon, temporal_ensemble, ensemble_decay)
    obs, info = env.reset(seed=seed)
    instruction = info.get("instruction") or getattr(env.unwrapped, "instruction", "")
    if not instruction:
        raise ValueError(f"env {env.spec.id if env.spec else env} gives no instruction "
                         f"(info['instruction'] after reset)")
    rec = EpisodeRecord(seed=seed, instruction=instruction)
    low, high = env.action_space.low, env.action_space.high
    if on_frame:
        on_frame(obs, info, rec, False)
    while True:
        if executor.needs_chunk():
            t0 = time.perf_counter()
            chunks = policy.sample(obs, spec.name, instruction, num_samples=candidates,
                                   num_steps=num_flow_steps, seed=policy_seed(seed, len(rec.policy_ms)))
            t1 = time.perf_counter()
            executor.set_chunk(chunks[0])
            rec.policy_ms.append((t1 - t0) * 1e3)
            rec.decision_ms.append((time.perf_counter() - t0) * 1e3)
        action = np.clip(executor.action(), low, high).astype(env.action_space.dtype)
        obs, reward, terminated, truncated, info = env.step(action)
        rec.steps += 1
        rec.ret += float(reward)
        rec.max_reward = max(rec.max_reward, float(reward))
        rec.success = bool(info.get("is_success", False))
        at_cap = max_steps is not None and rec.steps >= max_steps
        done = terminated or truncated or at_cap
        if done:
            rec.end = "terminated" if terminated else "truncated" if truncated else "max_steps"
        if on_frame:
            on_frame(obs, info, rec, done)
        if done:
            break
    rec.replans = len(rec.policy_ms) - 1
    return rec


def _fit_height(image: np.ndarray, height: int) -> np.ndarray:
    from PIL import Image

    width = max(1, round(image.shape[1] * height / image.shape[0]))
    return np.asarray(Image.fromarray(np.asarray(image, dtype=np.uint8)).resize((width, height)))


def video_frames(writer: VideoWriter, cameras: list[str], episode: int, extra_view=None):
    """``on_frame`` callback writing the cameras' images (side by side where they have the same
    height, else the first) with instruction, step and outcome on them; ``extra_view()``, if
    given, is an image appended on the right (the wheeled env's top view of the floor plan)."""
    def on_frame(obs, info, rec: EpisodeRecord, done: bool) -> None:
        images = [obs["images"][c] for c in cameras]
        same = all(im.shape[0] == images[0].shape[0] for im in images)
        image = np.concatenate(images, axis=1) if same else images[0]
        if extra_view is not None:
            image = np.concatenate([image, _fit_height(extra_view(), image.shape[0])], axis=1)
        status = "success" if info.get("is_success") else ("failed" if done else "")
        width = image.shape[1] * max(1, math.ceil(MIN_VIDEO_HEIGHT / image.shape[0]))
        lines = wrap_text(rec.instruction, width)[:2]
        lines.append(f"episode {episode}  seed {rec.seed}  step {rec.steps}  {status}")
        writer.write(annotate(image, lines))
    return on_frame


# ----------------------------------------------------------------------------- command
def _check_inputs(env: str, policy: str) -> str:
    from components.envs import EMBODIMENT_OF
    if env not in EMBODIMENT_OF:
        raise UsageError(f"--env: unknown environment '{env}'; known: {sorted(EMBODIMENT_OF)}")
    if not Path(policy).is_dir():
        raise CheckpointNotFoundError(f"--policy: checkpoint directory '{policy}' does not exist")
    return EMBODIMENT_OF[env]


def run(env: str, policy: str, episodes: int = 10, seed: int = 0, candidates: int = 1,
        execute_horizon: int | None = None, temporal_ensemble: bool | None = None, ensemble_decay: float = 0.01,
        max_steps: int | None = None, env_kwargs: dict | None = None, num_flow_steps: int | None = None,
        decoder: str = "torch", video: str | None = None, video_episodes: int = 3,
        json: str | None = None) -> dict:
    """Evaluate a policy closed-loop in a simulation env and report its success rate.

    Seeded episodes; success rate with its Wilson interval (95 percent), decision latencies; optionally
    the run-result JSON and an annotated video. Prints one summary line at the end.

    Args:
        env: environment id (vla_stack/FetchReach-v0, vla_stack/WheeledHallway-v0, vla_stack/AlohaTransferCube-v0, ...).
        policy: checkpoint directory (what ``fit`` writes); must know the env's embodiment.
        episodes: number of episodes; episode i is reset with seed ``seed + i``.
        seed: seed of the first episode.
        candidates: K chunks sampled per decision (candidate 0 is executed until a world model ranks them).
        execute_horizon: env steps executed per decision (default per action kind: aloha 25 of 50,
            fetch 10 of 10, wheeled 5 env steps = one 0.5 s waypoint spacing).
        temporal_ensemble: ACT temporal ensembling (a decision every step; action chunks only).
            Default: on for end-effector deltas (fetch) unless ``execute_horizon`` is given, off
            for the others.
        ensemble_decay: m of the ensembling weights exp(-m * i), i = 0 for the oldest chunk.
        max_steps: cap on env steps per episode (on top of the env's own limit).
        env_kwargs: keyword arguments of gym.make, e.g. {"floorplan": "loop"} for the wheeled env.
        num_flow_steps: Euler steps of the action decoder (default: the checkpoint's).
        decoder: "torch" or "onnx".
        video: write an mp4 of the first ``video_episodes`` episodes to this path.
        video_episodes: how many episodes go into the video.
        json: write the run result to this path.
    """
    import gymnasium as gym
    from tqdm import tqdm

    from components.policy import Policy

    embodiment = _check_inputs(env, policy)
    pol = Policy.from_pretrained(policy, decoder=decoder)
    if embodiment not in pol.embodiments:
        raise UsageError(f"--policy: '{policy}' does not know embodiment '{embodiment}' (needed by {env}); "
                         f"it knows {sorted(pol.embodiments)}")
    spec = pol.processor.embodiments[embodiment]
    if temporal_ensemble and spec.action_kind == "waypoints":
        raise UsageError(f"--temporal_ensemble: not available for {embodiment} (waypoints in the robot frame "
                         f"of each prediction cannot be averaged across steps)")
    if temporal_ensemble and execute_horizon not in (None, 1):
        raise UsageError("--temporal_ensemble decides every step; leave --execute_horizon unset")
    if temporal_ensemble is None:
        temporal_ensemble = execute_horizon is None and default_temporal_ensemble(spec)
    horizon = 1 if temporal_ensemble else (execute_horizon or default_execute_horizon(spec))
    if not 1 <= horizon <= max_execute_horizon(spec):
        raise UsageError(f"--execute_horizon: {horizon} is outside 1..{max_execute_horizon(spec)} for "
                         f"{embodiment} (chunk horizon {spec.chunk_horizon})")
    if episodes < 1 or candidates < 1:
        raise UsageError(f"--episodes and --candidates must be >= 1, got {episodes} and {candidates}")

    environment = gym.make(env, **(env_kwargs or {}))
    seeds = [seed + i for i in range(episodes)]
    records: list[EpisodeRecord] = []
    with contextlib.ExitStack() as stack:
        stack.callback(environment.close)
        writer = stack.enter_context(VideoWriter(video, fps=spec.control_hz)) if video else None
        bar = tqdm(seeds, desc=env, unit="ep", dynamic_ncols=True)
        for i, s in enumerate(bar):
            on_frame = (video_frames(writer, spec.camera_names, i, getattr(environment.unwrapped, "render_top", None))
                        if writer and i < video_episodes else None)
            records.append(run_episode(
                environment, pol, spec, s, candidates=candidates, execute_horizon=horizon,
                temporal_ensemble=temporal_ensemble, ensemble_decay=ensemble_decay, max_steps=max_steps,
                num_flow_steps=num_flow_steps, on_frame=on_frame))
            k = sum(r.success for r in records)
            bar.set_postfix_str(f"success {k}/{len(records)} ({k / len(records):.0%})")
    video_path = writer.path if writer and writer.frames else None

    successes = sum(r.success for r in records)
    result = {
        "env": env,
        "env_kwargs": {k: str(v) for k, v in (env_kwargs or {}).items()},
        "policy": str(policy),
        "embodiment": embodiment,
        "episodes": len(records),
        "successes": successes,
        "success_rate": successes / len(records),
        "ci95": list(wilson_interval(successes, len(records))),
        "candidates": candidates,
        "world_model": None,
        "decision_ms": latency_summary([ms for r in records for ms in r.decision_ms]),
        "policy_ms": latency_summary([ms for r in records for ms in r.policy_ms]),
        "imagine_ms": None,
        "replans": sum(r.replans for r in records),
        "decisions": sum(len(r.policy_ms) for r in records),
        # episodes per best reward stage reached, where the env's reward is staged (aloha: 0-4)
        "max_reward_counts": ({f"{v:g}": sum(r.max_reward == v for r in records)
                               for v in sorted({r.max_reward for r in records})}
                              if isinstance(getattr(environment.unwrapped, "max_reward", None), int) else None),
        "seeds": seeds,
        "execute_horizon": horizon,
        "temporal_ensemble": temporal_ensemble,
        "max_steps": max_steps,
        "video": str(video_path) if video_path else None,
        "per_episode": [r.to_json() for r in records],
    }
    if json:
        write_json(result, json)
    print(summary_line(result))
    return result
