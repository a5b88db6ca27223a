"""Rank agreement (``rank_agreement``): the Spearman helper on constructed cases, the per-run summary,
and an episode with the oracle asked for true outcomes is the same episode as without it."""
import math

import gymnasium as gym
import numpy as np
import pytest

import components.envs  # noqa: F401  (registers the envs)
from planners.episode import run_episode
from planners.imagine import rank_agreement_of, spearman
from stack.runner import Arm, make_decider, rank_summary

PUSH = "vla_stack/FetchPush-v0"
EXECUTE = 5


def test_spearman_is_exact_on_constructed_cases_with_ties():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties get average ranks: [1, 2.5, 2.5, 4] against [1, 3, 2, 4] -> 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(math.sqrt(0.9))
    assert spearman([0.3, 0.1, 0.2], [5.0, -1.0, 5.0]) == pytest.approx(0.8660254037844387)  # 1.5 / sqrt(3)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3])) and math.isnan(spearman([1.0], [2.0]))
    with pytest.raises(ValueError, match="same length"):
        spearman([1, 2], [1, 2, 3])


def test_rank_agreement_of_a_decision_and_its_summary():
    reversed_ = rank_agreement_of([0.1, 0.9, 0.5], [3.0, 1.0, 2.0], choice=1)
    assert reversed_ == {"true_outcome": [3.0, 1.0, 2.0], "spearman": pytest.approx(-1.0), "top1": False,
                         "true_chosen": 1.0, "true_mean": 2.0, "true_best": 3.0}
    tied_best = rank_agreement_of([0.2, 0.7, 0.1], [2.0, 2.0, 1.0], choice=1)
    assert tied_best["top1"] and tied_best["spearman"] == pytest.approx(math.sqrt(0.75))
    constant = rank_agreement_of([0.2, 0.7], [1.0, 1.0], choice=0)
    assert constant["spearman"] is None and constant["top1"]
    summary = rank_summary([reversed_, tied_best, constant, {"scores": [0.0]}])
    assert summary["decisions"] == 3 and summary["spearman_defined"] == 2
    assert summary["spearman_mean"] == pytest.approx((-1.0 + math.sqrt(0.75)) / 2)
    assert summary["top1_agreement"] == pytest.approx(2 / 3)
    assert summary["regret"] == pytest.approx(2.0 / 3)  # (3 - 1 + 0 + 0) / 3
    assert summary["chosen_minus_mean"] == pytest.approx((-1.0 + 1 / 3 + 0.0) / 3)
    assert rank_summary([{"scores": [0.0]}]) is None


def _episode(env, policy, arm, seed=5):
    """One short episode of ``arm``: its record and every executed action and next observation."""
    spec = policy.processor.embodiments["fetch"]
    decider = make_decider(arm, policy, "fetch", spec, env, EXECUTE, num_flow_steps=2)
    steps = []
    rec = run_episode(env, decider, spec, seed, execute_horizon=EXECUTE, max_steps=2 * EXECUTE,
                      on_step=lambda obs, action, reward, nxt, info: steps.append((action.copy(), nxt, reward)))
    return rec, steps


@pytest.fixture(scope="module")
def push():
    env = gym.make(PUSH)
    yield env
    env.close()


def test_asking_the_oracle_for_true_outcomes_leaves_the_episode_unchanged(policy, push):
    plain, plain_steps = _episode(push, policy, Arm(candidates=2, scorer="random"))
    ranked, ranked_steps = _episode(push, policy, Arm(candidates=2, scorer="random", rank_agreement=True))
    assert len(plain_steps) == len(ranked_steps) == 2 * EXECUTE
    for (a, obs_a, r_a), (b, obs_b, r_b) in zip(plain_steps, ranked_steps, strict=True):
        assert np.array_equal(a, b) and r_a == r_b
        assert np.array_equal(obs_a["state"], obs_b["state"])
        for cam in obs_a["images"]:
            assert np.array_equal(obs_a["images"][cam], obs_b["images"][cam])
    assert [d["scores"] for d in plain.decisions] == [d["scores"] for d in ranked.decisions]
    assert "true_outcome" not in plain.decisions[0]
    for d in ranked.decisions:
        assert len(d["true_outcome"]) == 2 and d["truth_ms"] > 0
        assert d["top1"] == (d["true_outcome"][d["choice"]] == max(d["true_outcome"]))
        if d["spearman"] is not None:  # two candidates: the order agrees (+1, the choice is the best) or not (-1)
            assert abs(d["spearman"]) == pytest.approx(1.0) and d["top1"] == (d["spearman"] > 0)


def test_ranking_by_the_oracles_own_outcome_agrees_with_the_truth(policy, push):
    rec, _ = _episode(push, policy, Arm(candidates=3, world_model="oracle", scorer="oracle_outcome",
                                        rank_agreement=True))
    for d in rec.decisions:
        assert d["true_outcome"] == d["outcome"] and d["top1"]
        assert d["spearman"] is None or d["spearman"] == pytest.approx(1.0)
    summary = rank_summary(rec.decisions)
    assert summary["top1_agreement"] == 1.0 and summary["regret"] == 0.0 and summary["chosen_minus_mean"] >= 0
