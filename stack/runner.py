"""``vla-stack run --env ID --policy DIR``: seeded closed-loop episodes of a policy in a simulation env.

The episode loop and its executors live in ``planners`` (``planners.episode.run_episode``); this module
checks the arguments, then writes the run result (docs/ARCHITECTURE.md) and the annotated video.
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import asdict, dataclass
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


def video_frames(writer: VideoWriter, cameras: list[str], episode: int, extra_view=None, imagined_view=None):
    """``on_frame`` callback writing the cameras' images (side by side where they have the same
    height, else the first) with instruction, step and outcome on them; ``extra_view()``, if
    given, is an image appended on the right (the wheeled env's top view of the floor plan);
    ``imagined_view()`` (an :class:`~planners.imagine.ImagineDecider`'s) gives the imagined frame of
    the chosen candidate, shown beside the real one, and a line with the K scores."""
    def on_frame(obs, info, rec: EpisodeRecord, done: bool) -> None:
        images = [obs["images"][c] for c in cameras]
        same = all(im.shape[0] == images[0].shape[0] for im in images)
        image = np.concatenate(images, axis=1) if same else images[0]
        score_line = None
        if imagined_view is not None:
            frame, score_line = imagined_view()
            frame = np.zeros_like(image) if frame is None else _fit_size(frame, image.shape[:2])
            image = np.concatenate([image, frame], axis=1)
        if extra_view is not None:
            image = np.concatenate([image, _fit_height(extra_view(), image.shape[0])], axis=1)
        status = "success" if info.get("is_success") else ("failed" if done else "")
        width = image.shape[1] * max(1, math.ceil(MIN_VIDEO_HEIGHT / image.shape[0]))
        lines = wrap_text(rec.instruction, width)[:2]
        lines.append(f"episode {episode}  seed {rec.seed}  step {rec.steps}  {status}")
        if imagined_view is not None:
            lines.append(f"real | imagined   {score_line or ''}")
        writer.write(annotate(image, lines))
    return on_frame


def _fit_size(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if image.shape[:2] == tuple(size):
        return np.asarray(image, dtype=np.uint8)
    return np.asarray(Image.fromarray(np.asarray(image, dtype=np.uint8)).resize((size[1], size[0])))


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


@dataclass
class Arm:
    """How decisions are made: K candidates, the world model that imagines them (``none``, ``oracle`` or a
    checkpoint directory), the scorer that ranks them, and whether reality is verified against them."""
    name: str = "run"
    candidates: int = 1
    world_model: str = "none"
    scorer: str | None = None
    verify: bool = False
    surprise_threshold: float | None = None
    uncertainty_penalty: float = 0.0
    goal_image: str | None = None
    rank_agreement: bool = False
    scorer_model: str | None = None

    @property
    def imagines(self) -> bool:
        """False only for today's plain VLA (K = 1, no world model): the imagine loop is not used."""
        return self.candidates != 1 or self.world_model != "none"

    def check(self) -> None:
        """Argument checks that need nothing loaded."""
        from world_model.scorers import scorer_names
        if self.candidates < 1:
            raise UsageError(f"--candidates must be >= 1, got {self.candidates}")
        if self.scorer is not None and self.scorer not in scorer_names():
            raise UsageError(f"--scorer: unknown scorer '{self.scorer}'; known: {scorer_names()}")
        if self.world_model == "none":
            if self.candidates > 1 and self.scorer is None:
                raise UsageError(f"--candidates {self.candidates} with --world_model none: nothing ranks the "
                                 f"candidates; give --scorer random (the random-of-K control) or a --world_model")
            if self.scorer not in (None, "random"):
                raise UsageError(f"--scorer {self.scorer} ranks imagined futures: it needs a --world_model "
                                 f"(oracle or a checkpoint directory); with none only 'random' applies")
            if self.verify:
                raise UsageError("--verify compares reality with the imagination: it needs a --world_model")
        elif self.candidates > 1 and self.scorer is None:
            raise UsageError(f"--world_model {self.world_model} with --candidates {self.candidates} needs "
                             f"--scorer NAME to rank them; known: {scorer_names()}")
        if self.verify and self.surprise_threshold is None:
            raise UsageError("--verify needs --surprise_threshold (calibrate it on held-out rollouts: "
                             "planners.imagine.calibrate_surprise, docs/ARCHITECTURE.md)")
        if self.rank_agreement and self.candidates < 2:
            raise UsageError(f"--rank_agreement compares the ranking of the K candidates with their true "
                             f"outcomes: it needs --candidates >= 2, got {self.candidates}")
        if self.surprise_threshold is not None and self.surprise_threshold < 0:
            raise UsageError(f"--surprise_threshold must be >= 0, got {self.surprise_threshold}")
        if self.world_model not in ("none", "oracle") and not Path(self.world_model).is_dir():
            raise CheckpointNotFoundError(f"--world_model: '{self.world_model}' is neither none, oracle nor an "
                                          f"existing world-model checkpoint directory")


def load_world_model(name: str):
    """``none`` -> None, ``oracle`` -> the simulator oracle, else a learned world-model checkpoint directory."""
    if name == "none":
        return None
    if name == "oracle":
        from world_model.oracle import OracleWorldModel
        return OracleWorldModel()
    try:
        from world_model import load_world_model as load
    except ImportError as err:
        raise UsageError(f"--world_model {name}: this install has no learned world models "
                         f"(world_model.load_world_model is missing); use none or oracle") from err
    return load(name)


def make_decider(arm: Arm, pol, embodiment: str, spec, env, horizon: int, num_flow_steps: int | None = None):
    """The decider of ``arm``: today's :class:`PolicyDecider` for K = 1 without a world model, else an
    :class:`~planners.imagine.ImagineDecider` whose world model has been checked against ``spec`` and
    ``env`` (before any env step)."""
    if not arm.imagines:
        return PolicyDecider(pol, embodiment, num_flow_steps)
    from planners.imagine import ImagineDecider, history_length
    from world_model.scorers import make_scorer

    wm = load_world_model(arm.world_model)
    if wm is not None:
        wm.check_compatible(spec, env, context_frames=history_length(wm), execute_steps=horizon)
    truth = None
    if arm.rank_agreement:
        from world_model.base import WorldModelMismatchError
        from world_model.oracle import OracleWorldModel
        truth = OracleWorldModel()
        try:
            truth.check_compatible(spec, env)
        except WorldModelMismatchError as err:
            raise UsageError(f"--rank_agreement needs the simulator oracle for the true outcomes (Fetch, ALOHA): "
                             f"{err}") from err
    scorer = make_scorer(arm.scorer or "random", world_model=wm, spec=spec, goal_image=arm.goal_image,
                         uncertainty_penalty=arm.uncertainty_penalty, scorer_model=arm.scorer_model)
    return ImagineDecider(pol, embodiment, spec, wm, scorer, arm.candidates, horizon, verify=arm.verify,
                          surprise_threshold=arm.surprise_threshold, num_flow_steps=num_flow_steps, truth=truth)


def load_policy(policy: str, decoder: str, embodiment: str, env: str, runtime: str = "torch"):
    from components.policy import Policy
    pol = Policy.from_pretrained(policy, decoder=decoder, runtime=runtime)
    if embodiment not in pol.embodiments:
        raise UsageError(f"--policy: '{policy}' does not know embodiment '{embodiment}' (needed by {env}); "
                         f"it knows {sorted(pol.embodiments)}")
    return pol, pol.processor.embodiments[embodiment]


def executor_settings(spec, execute_horizon: int | None, temporal_ensemble: bool | None,
                      imagines: bool) -> tuple[int, bool]:
    """``(execute horizon, temporal ensembling)`` after the checks; with imagination ensembling is off and
    each chosen chunk runs ``execute_horizon`` steps (the K = 1 control arm: ``--temporal_ensemble false``)."""
    embodiment = spec.name
    if temporal_ensemble and spec.action_kind == "waypoints":
        raise UsageError(f"--temporal_ensemble: not available for {embodiment} (waypoints in the robot frame "
                         f"of each prediction cannot be averaged across steps)")
    if temporal_ensemble and imagines:
        raise UsageError("--temporal_ensemble: not with --candidates > 1 or a --world_model (the chosen chunk "
                         "is executed for --execute_horizon steps and verified against its imagination)")
    if temporal_ensemble and execute_horizon not in (None, 1):
        raise UsageError("--temporal_ensemble decides every step; leave --execute_horizon unset")
    if temporal_ensemble is None:
        temporal_ensemble = not imagines and execute_horizon is None and default_temporal_ensemble(spec)
    horizon = 1 if temporal_ensemble else (execute_horizon or default_execute_horizon(spec))
    if not 1 <= horizon <= max_execute_horizon(spec):
        raise UsageError(f"--execute_horizon: {horizon} is outside 1..{max_execute_horizon(spec)} for "
                         f"{embodiment} (chunk horizon {spec.chunk_horizon})")
    return horizon, temporal_ensemble


def evaluate(environment, decider, spec, seeds: list[int], *, horizon: int, temporal_ensemble: bool,
             ensemble_decay: float = 0.01, max_steps: int | None = None, writer: VideoWriter | None = None,
             video_episodes: int = 0, recorder=None, desc: str = "") -> list[EpisodeRecord]:
    """``run_episode`` for each seed with ``decider``, writing video frames and recorded rollouts."""
    from tqdm import tqdm

    records: list[EpisodeRecord] = []
    imagined = getattr(decider, "imagined_view", None)
    bar = tqdm(seeds, desc=desc, unit="ep", dynamic_ncols=True)
    for i, s in enumerate(bar):
        callbacks = []
        if writer and i < video_episodes:
            callbacks.append(video_frames(writer, spec.camera_names, i,
                                          getattr(environment.unwrapped, "render_top", None), imagined))
        if recorder:
            callbacks.append(recorder.on_frame)
        on_frame = (lambda *a: [c(*a) for c in callbacks]) if callbacks else None
        rec = run_episode(environment, decider, spec, s, execute_horizon=horizon, temporal_ensemble=temporal_ensemble,
                          ensemble_decay=ensemble_decay, max_steps=max_steps, on_frame=on_frame,
                          on_step=recorder.on_step if recorder else None)
        if recorder:
            recorder.finish(rec)
        records.append(rec)
        k = sum(r.success for r in records)
        bar.set_postfix_str(f"success {k}/{len(records)} ({k / len(records):.0%})")
    return records


def rank_summary(decisions: list[dict]) -> dict | None:
    """Ranking by the arm's scores against the oracle's true outcomes over the decisions that have them
    (``rank_agreement``): mean Spearman (over decisions where it is defined), top-1 agreement, and the true
    outcome of the chosen candidate against the best (regret) and the mean of the K; None without any."""
    ranked = [d for d in decisions if "true_outcome" in d]
    if not ranked:
        return None
    rho = [d["spearman"] for d in ranked if d["spearman"] is not None]
    return {"decisions": len(ranked), "spearman_mean": float(np.mean(rho)) if rho else None,
            "spearman_defined": len(rho), "top1_agreement": float(np.mean([d["top1"] for d in ranked])),
            "regret": float(np.mean([d["true_best"] - d["true_chosen"] for d in ranked])),
            "chosen_minus_mean": float(np.mean([d["true_chosen"] - d["true_mean"] for d in ranked]))}


def arm_summary(arm: Arm, decider, records: list[EpisodeRecord]) -> dict:
    """The imagine-loop fields of a run result (absent for the plain VLA)."""
    decisions = [d for r in records for d in r.decisions]
    return {
        "world_model": arm.world_model,
        "scorer": decider.scorer.name,
        "verify": arm.verify,
        "surprise_threshold": arm.surprise_threshold,
        "imagine_ms": latency_summary([d["imagine_ms"] for d in decisions if d["imagine_ms"] is not None]),
        "score_ms": latency_summary([d["score_ms"] for d in decisions]),
        "surprise_replans": sum(r.surprise_replans for r in records),
        "rank_agreement": rank_summary(decisions),
    }


def run(env: str, policy: str | None = None, episodes: int = 10, seed: int = 0, candidates: int = 1, world_model: str = "none",
        scorer: str | None = None, verify: bool = False, surprise_threshold: float | None = None,
        uncertainty_penalty: float = 0.0, goal_image: str | None = None, rank_agreement: bool = False,
        scorer_model: str | None = None, record: str | None = None,
        execute_horizon: int | None = None, temporal_ensemble: bool | None = None, ensemble_decay: float = 0.01,
        max_steps: int | None = None, env_kwargs: dict | None = None, num_flow_steps: int | None = None,
        decoder: str = "torch", video: str | None = None, video_episodes: int = 3,
        json: str | None = None, remote: str | None = None, num_envs: int = 1, runtime: str = "torch") -> dict:
    """Evaluate a policy closed-loop in a simulation env and report its success rate.

    Seeded episodes; success rate with its Wilson interval (95 percent), decision latencies; optionally
    the run-result JSON, an annotated video and the rollouts as an episode store. With ``candidates`` > 1
    or a ``world_model`` the imagine-execute-verify loop decides (docs/ARCHITECTURE.md). Prints one
    summary line at the end.

    Args:
        env: environment id (vla_stack/FetchReach-v0, vla_stack/WheeledHallway-v0, vla_stack/AlohaTransferCube-v0, ...).
        policy: checkpoint directory (what ``fit`` writes); must know the env's embodiment.
        episodes: number of episodes; episode i is reset with seed ``seed + i``.
        seed: seed of the first episode.
        candidates: chunks sampled per decision (one VLA call); more than 1 needs a --scorer.
        world_model: what imagines the candidates: none, oracle (simulates them in a copy of the
            simulator: an upper bound for ablations) or a world-model checkpoint directory.
        scorer: what ranks the candidates: random (the random-of-K control), oracle_outcome (the true
            outcome; --world_model oracle), goal_latent (needs --goal_image), progress (the learned
            value of the last imagined frame; needs --scorer_model), or a registered scorer.
        verify: cut the chunk and replan when the real frames differ from the imagined ones by more than
            --surprise_threshold.
        surprise_threshold: RMS latent distance above which verify replans (planners.imagine.calibrate_surprise).
        uncertainty_penalty: subtract this times the disagreement of the world model's samples per candidate.
        goal_image: the goal as the cameras see it (side by side), for --scorer goal_latent.
        rank_agreement: also simulate the K candidates with the oracle (Fetch, ALOHA; the episode is
            unchanged) and report how the scorer's ranking agrees with their true outcomes.
        scorer_model: the trained scorer's directory, for --scorer progress (configs/train/progress_tiny.yaml).
        record: append every episode to this episode store (.zarr) with its outcome per frame.
        execute_horizon: env steps executed per decision (default per action kind: aloha 25 of 50,
            fetch 10 of 10, wheeled 5 env steps = one 0.5 s waypoint spacing).
        temporal_ensemble: ACT temporal ensembling (a decision every step; action chunks only).
            Default: on for end-effector deltas (fetch) unless ``execute_horizon`` is given or the
            imagine loop decides, off for the others.
        ensemble_decay: m of the ensembling weights exp(-m * i), i = 0 for the oldest chunk.
        max_steps: cap on env steps per episode (on top of the env's own limit).
        env_kwargs: keyword arguments of gym.make, e.g. {"floorplan": "loop"} for the wheeled env.
        num_flow_steps: Euler steps of the action decoder (default: the checkpoint's).
        decoder: "torch" or "onnx" (the exported decoder graph only).
        video: write an mp4 of the first ``video_episodes`` episodes to this path.
        video_episodes: how many episodes go into the video.
        json: write the run result to this path.
        remote: ws://HOST:PORT of a policy server (``vla-stack serve``) to decide with, instead of ``policy``.
        num_envs: environments stepped at once (gymnasium AsyncVectorEnv, one process each), their policy
            calls batched into one; the same seeded episodes as 1 (the plain VLA only).
        runtime: "torch" or "onnxruntime" (the whole policy as exported by ``vla-stack export``).
    """
    import gymnasium as gym

    arm = Arm("run", candidates, world_model, scorer, verify, surprise_threshold, uncertainty_penalty, goal_image,
              rank_agreement=rank_agreement, scorer_model=scorer_model)
    arm.check()
    embodiment = _check_inputs(env, policy, remote)
    if episodes < 1:
        raise UsageError(f"--episodes must be >= 1, got {episodes}")
    if remote is not None:
        if num_flow_steps is not None or decoder != "torch" or runtime != "torch":
            raise UsageError("--num_flow_steps, --decoder and --runtime are the server's choice with --remote")
        if arm.imagines or record:
            raise UsageError("--remote decides with the server's single chunk; --candidates, --world_model and "
                             "--record need a local --policy")
        remote_decider = RemoteDecider(remote, embodiment)
        pol, spec = None, remote_decider.spec
    else:
        pol, spec = load_policy(policy, decoder, embodiment, env, runtime)
    horizon, temporal_ensemble = executor_settings(spec, execute_horizon, temporal_ensemble, arm.imagines)
    seeds = [seed + i for i in range(episodes)]
    if num_envs < 1:
        raise UsageError(f"--num_envs must be >= 1, got {num_envs}")
    if num_envs > 1:
        if remote is not None or arm.imagines or record or video:
            raise UsageError("--num_envs > 1 evaluates the plain VLA with a local --policy; --remote, --candidates "
                             "> 1, --world_model, --record and --video run with --num_envs 1")
        if decoder != "torch" or runtime != "torch":
            raise UsageError("--num_envs > 1 batches the policy calls, which the exported ONNX graphs (one "
                             "observation per call) cannot; use --decoder torch --runtime torch")
        records, staged = _run_vectorized(env, env_kwargs, pol, embodiment, spec, seeds, num_envs, horizon,
                                          temporal_ensemble, ensemble_decay, max_steps, num_flow_steps)
        return _result(env, env_kwargs, policy, remote, embodiment, candidates, arm, None, records, seeds, horizon,
                       temporal_ensemble, max_steps, record, None, json, num_envs, staged)

    environment = gym.make(env, **(env_kwargs or {}))
    with contextlib.ExitStack() as stack:
        stack.callback(environment.close)
        recorder = None
        if remote is not None:
            decider = remote_decider
            stack.callback(decider.close)
        else:
            decider = make_decider(arm, pol, embodiment, spec, environment, horizon, num_flow_steps)
        if record:
            from stack.rollouts import RolloutRecorder
            recorder = RolloutRecorder(record, spec, {"env_id": env, "env_kwargs": env_kwargs or {},
                                                      "policy": str(policy), **asdict(arm)})
        writer = stack.enter_context(VideoWriter(video, fps=spec.control_hz)) if video else None
        records = evaluate(environment, decider, spec, seeds, horizon=horizon, temporal_ensemble=temporal_ensemble,
                           ensemble_decay=ensemble_decay, max_steps=max_steps, writer=writer,
                           video_episodes=video_episodes, recorder=recorder, desc=env)
    video_path = writer.path if writer and writer.frames else None
    return _result(env, env_kwargs, policy, remote, embodiment, candidates, arm, decider, records, seeds, horizon,
                   temporal_ensemble, max_steps, record, video_path, json, 1,
                   staged=isinstance(getattr(environment.unwrapped, "max_reward", None), int))


def _run_vectorized(env, env_kwargs, pol, embodiment, spec, seeds, num_envs, horizon, temporal_ensemble,
                    ensemble_decay, max_steps, num_flow_steps) -> tuple[list[EpisodeRecord], bool]:
    from tqdm import tqdm

    from planners.parallel import run_parallel
    bar = tqdm(total=len(seeds), desc=f"{env} x{num_envs}", unit="ep", dynamic_ncols=True)
    done: list[EpisodeRecord] = []

    def on_episode(rec: EpisodeRecord) -> None:
        done.append(rec)
        k = sum(r.success for r in done)
        bar.update(1)
        bar.set_postfix_str(f"success {k}/{len(done)} ({k / len(done):.0%})")

    try:
        return run_parallel(env, env_kwargs, pol, embodiment, spec, seeds, num_envs, execute_horizon=horizon,
                            temporal_ensemble=temporal_ensemble, ensemble_decay=ensemble_decay, max_steps=max_steps,
                            num_flow_steps=num_flow_steps, on_episode=on_episode)
    finally:
        bar.close()


def _result(env, env_kwargs, policy, remote, embodiment, candidates, arm, decider, records, seeds, horizon,
            temporal_ensemble, max_steps, record, video_path, json, num_envs, staged: bool) -> dict:
    """The run result (docs/ARCHITECTURE.md, "Run result"), written to ``json`` and summarised in one line."""
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
        **(arm_summary(arm, decider, records) if arm.imagines else {}),
        "decision_ms": latency_summary([ms for r in records for ms in r.decision_ms]),
        "policy_ms": latency_summary([ms for r in records for ms in r.policy_ms]),
        "replans": sum(r.replans for r in records),
        "decisions": sum(len(r.policy_ms) for r in records),
        # action values the Policy held to the spec's ranges (clipped) or replaced (non-finite)
        "clipped_actions": sum(r.clipped_actions for r in records),
        "nonfinite_actions": sum(r.nonfinite_actions for r in records),
        # episodes per best reward stage reached, where the env's reward is staged (aloha: 0-4)
        "max_reward_counts": ({f"{v:g}": sum(r.max_reward == v for r in records)
                               for v in sorted({r.max_reward for r in records})} if staged else None),
        "seeds": seeds,
        "num_envs": num_envs,
        "execute_horizon": horizon,
        "temporal_ensemble": temporal_ensemble,
        "max_steps": max_steps,
        "record": str(record) if record else None,
        "video": str(video_path) if video_path else None,
        "per_episode": [r.to_json() for r in records],
    }
    if json:
        write_json(result, json)
    print(summary_line(result))
    return result
