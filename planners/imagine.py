"""Imagine-execute-verify: K candidate chunks from one VLA call, imagined by a world model in one batched
call, ranked by a scorer; the best is executed, and reality is checked against its imagination.

:class:`ImagineDecider` is a :class:`planners.episode.Decider`, so ``run_episode`` runs it like the plain
VLA. Verify: at the imagined steps of the executed chunk, surprise = RMS distance between the latent of
the real observation (``world_model.encode``) and the imagined latent of the chosen candidate; above
``surprise_threshold`` the chunk is cut and the next step replans (``EpisodeRecord.surprise_replans``).
The threshold is calibrated with :func:`calibrate_surprise` (docs/ARCHITECTURE.md, "Imagine-execute-verify").
"""
from __future__ import annotations

import time
from collections import deque

import numpy as np

from components.embodiment import EmbodimentSpec
from planners.episode import Decision, policy_seed
from world_model.base import Imagination

#: observations kept for the world model's context (the last one is the current observation)
HISTORY = 2


def history_length(world_model) -> int:
    """Observations to keep: :data:`HISTORY`, or more where a learned model was trained on more context."""
    return max(HISTORY, int(getattr(world_model, "context_frames", 0) or 0))


def surprise(real: np.ndarray, imagined: np.ndarray) -> float:
    """RMS difference of two latents of the same shape (pixel latents: in [0, 1] pixel units)."""
    real, imagined = np.asarray(real, dtype=np.float64), np.asarray(imagined, dtype=np.float64)
    if real.shape != imagined.shape:
        raise ValueError(f"real latent {real.shape} and imagined latent {imagined.shape} differ in shape")
    return float(np.sqrt(np.mean((real - imagined) ** 2)))


def calibrate_surprise(values, quantile: float = 0.95) -> float:
    """The threshold above which a surprise counts as a failed prediction: the ``quantile`` of the
    surprise values of held-out rollouts run without verify (``per_episode[*].decisions[*].surprise``)."""
    values = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if values.size == 0:
        raise ValueError("calibrate_surprise needs at least one finite surprise value")
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    return float(np.quantile(values, quantile))


def surprises_of(result: dict) -> list[float]:
    """All surprise values of a ``vla-stack run`` result (its JSON), for :func:`calibrate_surprise`."""
    return [s for ep in result["per_episode"] for d in ep.get("decisions", []) for s in d.get("surprise", [])]


def spearman(a, b) -> float:
    """Spearman rank correlation of two equally long score vectors, ties as average ranks; NaN where
    either is constant (no ranking to compare) or shorter than 2."""
    import warnings

    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"spearman needs two 1-d vectors of the same length, got {a.shape} and {b.shape}")
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(a, b).statistic)


def rank_agreement_of(scores, true_outcome, choice: int) -> dict:
    """How the arm's ranking of K candidates agrees with their true outcomes: Spearman, whether the
    chosen one is a true best (top-1), and its true outcome against the best and the mean of the K;
    ``spearman`` is None where it is undefined (constant scores or outcomes)."""
    true = np.asarray(true_outcome, dtype=np.float64)
    rho = spearman(scores, true)
    return {"true_outcome": [float(t) for t in true], "spearman": rho if np.isfinite(rho) else None,
            "top1": bool(true[choice] == true.max()), "true_chosen": float(true[choice]),
            "true_mean": float(true.mean()), "true_best": float(true.max())}


class ImagineDecider:
    """Best-of-K by imagination: ``decide`` samples K chunks (backbone once), imagines them (one call),
    scores them and returns the best; ``on_step`` verifies. ``world_model=None`` skips imagination (only a
    scorer that needs none, ``random``, can then rank). ``world_model`` may be reassigned between episodes.
    ``truth`` (an :class:`~world_model.oracle.OracleWorldModel`), if given, simulates the same K candidates
    after scoring for their true outcomes (:func:`rank_agreement_of` in the record); it restores the
    simulator, so the episode is unchanged."""

    def __init__(self, policy, embodiment: str, spec: EmbodimentSpec, world_model, scorer, candidates: int,
                 execute_steps: int, verify: bool = False, surprise_threshold: float | None = None,
                 num_flow_steps: int | None = None, truth=None):
        if candidates < 1 or execute_steps < 1:
            raise ValueError(f"candidates={candidates} and execute_steps={execute_steps} must be >= 1")
        if verify and (world_model is None or surprise_threshold is None):
            raise ValueError("verify needs a world model and a surprise_threshold")
        self.policy, self.embodiment, self.spec = policy, embodiment, spec
        self.world_model, self.scorer = world_model, scorer
        self.candidates, self.execute_steps = candidates, execute_steps
        self.verify, self.surprise_threshold = verify, surprise_threshold
        self.num_flow_steps = num_flow_steps
        self.truth = truth
        self.episode_seed = self.calls = 0
        self.history: deque[dict] = deque(maxlen=history_length(world_model))
        self.imagination: Imagination | None = None
        self.record: dict | None = None
        self.step_in_chunk = 0

    def begin_episode(self, env) -> None:
        """After ``env.reset``: the world model may need the env (the oracle keeps its simulator)."""
        self.history = deque(maxlen=history_length(self.world_model))
        if self.world_model is not None:
            self.world_model.begin_episode(env)
        if self.truth is not None:
            self.truth.begin_episode(env)

    def reset(self, episode_seed: int) -> None:
        self.episode_seed, self.calls = episode_seed, 0
        self.history.clear()
        self.imagination, self.record = None, None

    def decide(self, obs: dict, instruction: str) -> Decision:
        seed = policy_seed(self.episode_seed, self.calls)
        self.calls += 1
        t0 = time.perf_counter()
        out = self.policy.sample_limited(obs, self.embodiment, instruction, num_samples=self.candidates,
                                         num_steps=self.num_flow_steps, seed=seed)
        policy_ms = (time.perf_counter() - t0) * 1e3
        if not self.history or self.history[-1] is not obs:
            self.history.append(obs)
        if self.world_model is not None:
            t1 = time.perf_counter()
            imagination = self.world_model.imagine(list(self.history), out.chunks, self.spec, self.execute_steps,
                                                   seed=seed)
            imagine_ms = (time.perf_counter() - t1) * 1e3
        else:  # nothing imagined: K candidates with empty latents (the random control arm)
            imagination, imagine_ms = Imagination(np.zeros((self.candidates, 0, 0), np.float32), None, []), None
        t2 = time.perf_counter()
        rng = np.random.default_rng(np.random.SeedSequence([self.episode_seed, self.calls, 1]))
        scores = np.asarray(self.scorer.score(imagination, instruction, self.spec, rng), dtype=np.float64)
        score_ms = (time.perf_counter() - t2) * 1e3
        if scores.shape != (self.candidates,):
            raise ValueError(f"scorer {self.scorer.name} gave scores of shape {scores.shape}, "
                             f"expected ({self.candidates},)")
        choice = int(np.argmax(scores))
        self.imagination, self.step_in_chunk = imagination, 0
        self.record = {"scores": [float(s) for s in scores], "choice": choice, "policy_ms": policy_ms,
                       "imagine_ms": imagine_ms, "score_ms": score_ms, "surprise": [], "surprise_steps": [],
                       "cut_at": None}
        if imagination.outcome is not None:
            self.record["outcome"] = [float(o) for o in imagination.outcome]
        if self.truth is not None:  # after the timed parts: not in policy/imagine/score ms
            t3 = time.perf_counter()
            true = self.truth.imagine(list(self.history), out.chunks, self.spec, self.execute_steps, seed=seed)
            self.record.update(rank_agreement_of(scores, true.outcome, choice),
                               truth_ms=(time.perf_counter() - t3) * 1e3)
        return Decision(out.chunks[choice], policy_ms, out.clipped, out.nonfinite, record=self.record)

    def on_step(self, obs: dict, action: np.ndarray, reward: float, info: dict) -> bool:
        self.history.append(obs)
        self.step_in_chunk += 1
        im = self.imagination
        if self.world_model is None or im is None or self.step_in_chunk not in im.steps:
            return False
        f = im.steps.index(self.step_in_chunk)
        value = surprise(self.world_model.encode(obs, self.spec), im.latents[self.record["choice"], f])
        self.record["surprise"].append(value)
        self.record["surprise_steps"].append(self.step_in_chunk)
        if self.verify and value > self.surprise_threshold:
            self.record["cut_at"] = self.step_in_chunk
            return True
        return False

    def imagined_view(self) -> tuple[np.ndarray | None, str]:
        """For the video: the chosen candidate's imagined frame for the current step (the next predicted
        one at or after it) and a line with the K scores."""
        im, rec = self.imagination, self.record
        if rec is None:
            return None, ""
        line = "scores " + " ".join(("*" if k == rec["choice"] else "") + f"{s:.2f}"
                                    for k, s in enumerate(rec["scores"]))
        if im is None or im.frames is None or not im.steps:
            return None, line
        f = next((i for i, s in enumerate(im.steps) if s >= self.step_in_chunk), len(im.steps) - 1)
        return im.frames[rec["choice"], f], line
