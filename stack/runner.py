"""``vla-stack run --env ID --policy DIR``: seeded closed-loop episodes of a policy in a simulation env.

The episode loop and its executors live in ``planners`` (``planners.episode.run_episode``); this module
checks the arguments, then writes the run result (docs/ARCHITECTURE.md) and the annotated video.
"""
from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYGLET_HEADLESS", "true")

import numpy as np  # noqa: E402

from components.errors import CheckpointNotFoundError, UsageError  # noqa: E402
from planners.episode import EpisodeRecord, PolicyDecider, run_episode  # noqa: E402
from planners.executors import default_execute_horizon, default_temporal_ensemble, max_execute_horizon  # noqa: E402
from planners.remote import RemoteDecider  # noqa: E402
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
def _check_inputs(env: str, policy: str | None, remote: str | None = None) -> str:
    from components.envs import EMBODIMENT_OF
    if env not in EMBODIMENT_OF:
        raise UsageError(f"--env: unknown environment '{env}'; known: {sorted(EMBODIMENT_OF)}")
    if (policy is None) == (remote is None):
        raise UsageError("give --policy DIR (a checkpoint directory) or --remote ws://HOST:PORT (a policy server), "
                         "exactly one")
    if remote is not None:
        if not remote.startswith(("ws://", "wss://")):
            raise UsageError(f"--remote: expected ws://HOST:PORT (what `vla-stack serve` prints), got '{remote}'")
    elif not Path(policy).is_dir():
        raise CheckpointNotFoundError(f"--policy: checkpoint directory '{policy}' does not exist")
    return EMBODIMENT_OF[env]


def run(env: str, policy: str | None = None, episodes: int = 10, seed: int = 0, candidates: int = 1,
        execute_horizon: int | None = None, temporal_ensemble: bool | None = None, ensemble_decay: float = 0.01,
        max_steps: int | None = None, env_kwargs: dict | None = None, num_flow_steps: int | None = None,
        decoder: str = "torch", video: str | None = None, video_episodes: int = 3,
        json: str | None = None, remote: str | None = None) -> dict:
    """Evaluate a policy closed-loop in a simulation env and report its success rate.

    Seeded episodes; success rate with its Wilson interval (95 percent), decision latencies; optionally
    the run-result JSON and an annotated video. Prints one summary line at the end.

    Args:
        env: environment id (vla_stack/FetchReach-v0, vla_stack/WheeledHallway-v0, vla_stack/AlohaTransferCube-v0, ...).
        policy: checkpoint directory (what ``fit`` writes); must know the env's embodiment.
        episodes: number of episodes; episode i is reset with seed ``seed + i``.
        seed: seed of the first episode.
        candidates: chunks sampled per decision; only 1 until a world model ranks candidates (more would
            be sampled and thrown away).
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
        remote: ws://HOST:PORT of a policy server (``vla-stack serve``) to decide with, instead of ``policy``.
    """
    import gymnasium as gym
    from tqdm import tqdm

    from components.policy import Policy

    if candidates != 1:
        raise UsageError(f"--candidates {candidates}: only 1 is supported until a world model ranks candidate "
                         f"chunks (more would be sampled and discarded)")
    embodiment = _check_inputs(env, policy, remote)
    if remote is not None:
        if num_flow_steps is not None or decoder != "torch":
            raise UsageError("--num_flow_steps and --decoder are the server's choice with --remote")
        decider = RemoteDecider(remote, embodiment)
        spec = decider.spec
    else:
        pol = Policy.from_pretrained(policy, decoder=decoder)
        if embodiment not in pol.embodiments:
            raise UsageError(f"--policy: '{policy}' does not know embodiment '{embodiment}' (needed by {env}); "
                             f"it knows {sorted(pol.embodiments)}")
        spec = pol.processor.embodiments[embodiment]
        decider = PolicyDecider(pol, embodiment, num_flow_steps)
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
    if episodes < 1:
        raise UsageError(f"--episodes must be >= 1, got {episodes}")

    environment = gym.make(env, **(env_kwargs or {}))
    seeds = [seed + i for i in range(episodes)]
    records: list[EpisodeRecord] = []
    with contextlib.ExitStack() as stack:
        stack.callback(environment.close)
        if remote is not None:
            stack.callback(decider.close)
        writer = stack.enter_context(VideoWriter(video, fps=spec.control_hz)) if video else None
        bar = tqdm(seeds, desc=env, unit="ep", dynamic_ncols=True)
        for i, s in enumerate(bar):
            on_frame = (video_frames(writer, spec.camera_names, i, getattr(environment.unwrapped, "render_top", None))
                        if writer and i < video_episodes else None)
            records.append(run_episode(
                environment, decider, spec, s, execute_horizon=horizon, temporal_ensemble=temporal_ensemble,
                ensemble_decay=ensemble_decay, max_steps=max_steps, on_frame=on_frame))
            k = sum(r.success for r in records)
            bar.set_postfix_str(f"success {k}/{len(records)} ({k / len(records):.0%})")
    video_path = writer.path if writer and writer.frames else None

    successes = sum(r.success for r in records)
    result = {
        "env": env,
        "env_kwargs": {k: str(v) for k, v in (env_kwargs or {}).items()},
        "policy": str(policy or remote),
        "embodiment": embodiment,
        "episodes": len(records),
        "successes": successes,
        "success_rate": successes / len(records),
        "ci95": list(wilson_interval(successes, len(records))),
        "candidates": candidates,
        "decision_ms": latency_summary([ms for r in records for ms in r.decision_ms]),
        "policy_ms": latency_summary([ms for r in records for ms in r.policy_ms]),
        "replans": sum(r.replans for r in records),
        "decisions": sum(len(r.policy_ms) for r in records),
        # action values the Policy held to the spec's ranges (clipped) or replaced (non-finite)
        "clipped_actions": sum(r.clipped_actions for r in records),
        "nonfinite_actions": sum(r.nonfinite_actions for r in records),
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
