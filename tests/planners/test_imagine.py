"""Imagine-execute-verify in the real Fetch push env with the simulator oracle and the session's tiny
(randomly initialised) checkpoint: batched imagination, the argmax choice, verify and swapping."""
import gymnasium as gym
import mujoco
import numpy as np
import pytest

import components.envs  # noqa: F401  (registers the envs)
from planners.episode import run_episode
from planners.imagine import ImagineDecider, calibrate_surprise, surprises_of
from world_model.base import predicted_steps
from world_model.oracle import OracleWorldModel
from world_model.scorers import make_scorer

PUSH = "vla_stack/FetchPush-v0"
K, EXECUTE = 3, 6


class CountingOracle(OracleWorldModel):
    """The real oracle, remembering the shape of every batch it was asked to imagine."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.batches = []

    def imagine(self, history, chunks, spec, execute_steps, seed=None):
        self.batches.append(np.asarray(chunks).shape)
        return super().imagine(history, chunks, spec, execute_steps, seed)


@pytest.fixture(scope="module")
def push():
    env = gym.make(PUSH)
    yield env
    env.close()


def _decider(policy, wm, verify=False, threshold=None, scorer="oracle_outcome"):
    spec = policy.processor.embodiments["fetch"]
    return ImagineDecider(policy, "fetch", spec, wm, make_scorer(scorer), K, EXECUTE, verify=verify,
                          surprise_threshold=threshold, num_flow_steps=2), spec


def test_k_candidates_are_imagined_in_one_batched_call_and_the_best_is_chosen(policy, push):
    wm = CountingOracle()
    decider, spec = _decider(policy, wm)
    rec = run_episode(push, decider, spec, seed=11, execute_horizon=EXECUTE, max_steps=2 * EXECUTE)
    assert wm.batches == [(K, spec.chunk_horizon, 4)] * 2  # one call per decision, all K candidates
    assert len(rec.decisions) == 2 and rec.replans == 1 and rec.surprise_replans == 0
    for d in rec.decisions:
        assert d["choice"] == int(np.argmax(d["outcome"])) and d["scores"] == d["outcome"]
        assert d["imagine_ms"] > 0 and d["surprise_steps"] == predicted_steps(EXECUTE, 4)
        assert max(d["surprise"]) == 0.0  # the oracle's imagination is exact when nothing interferes


def _move_block_at(step):
    def on_frame(obs, info, rec, done):
        if rec.steps == step:
            inner = push_env[0].unwrapped.inner
            adr = inner.model.joint("object0:joint").qposadr[0]
            inner.data.qpos[adr + 1] += 0.12  # 12 cm sideways, in the real simulator only
            mujoco.mj_forward(inner.model, inner.data)
    return on_frame


push_env = []


def test_a_block_moved_mid_chunk_is_a_surprise_that_replans(policy, push):
    push_env[:] = [push]
    decider, spec = _decider(policy, OracleWorldModel(), verify=True, threshold=1e-3)
    rec = run_episode(push, decider, spec, seed=11, execute_horizon=EXECUTE, max_steps=EXECUTE + 2,
                      on_frame=_move_block_at(1))
    first = rec.decisions[0]
    # step 1's frame was taken before the move; the predicted frame at step 2 shows the block elsewhere
    assert first["surprise_steps"] == [2] and first["surprise"][0] > 1e-3 and first["cut_at"] == 2
    assert rec.surprise_replans == 1 and len(rec.decisions) == 2
    assert calibrate_surprise([0.0, 0.1, 0.2, 0.3], 0.5) == pytest.approx(0.15)
    assert surprises_of({"per_episode": [rec.to_json()]}) == [s for d in rec.decisions for s in d["surprise"]]


def test_the_world_model_can_be_swapped_between_episodes(policy, push):
    first, second = OracleWorldModel(), OracleWorldModel(num_frames=2)
    decider, spec = _decider(policy, first, scorer="random")
    a = run_episode(push, decider, spec, seed=4, execute_horizon=EXECUTE, max_steps=EXECUTE)
    decider.world_model = second
    b = run_episode(push, decider, spec, seed=4, execute_horizon=EXECUTE, max_steps=EXECUTE)
    assert a.decisions[0]["surprise_steps"] == predicted_steps(EXECUTE, 4)
    assert b.decisions[0]["surprise_steps"] == predicted_steps(EXECUTE, 2)
    assert second.sim is not None and first.sim is not None
    # the same seed, the same random scorer draw: the same choice whichever world model imagined it
    assert a.decisions[0]["choice"] == b.decisions[0]["choice"]


def test_calibrate_surprise_command_pools_the_runs_it_is_given(tmp_path, capsys):
    import json

    from stack.commands import calibrate_surprise as command
    runs = [{"per_episode": [{"decisions": [{"surprise": [0.1, 0.4]}, {"surprise": [float("nan")]}]}]},
            {"per_episode": [{"decisions": [{"surprise": [0.2]}]}, {"decisions": []}]}]
    paths = []
    for i, result in enumerate(runs):
        paths.append(tmp_path / f"run{i}.json")
        paths[-1].write_text(json.dumps(result))
    assert command([str(p) for p in paths], quantile=0.5) == pytest.approx(0.2)  # NaN dropped: 0.1, 0.2, 0.4
    assert "the 0.5 quantile of 3 surprise values from 2 run(s)" in capsys.readouterr().out
    assert command(str(paths[1]), quantile=1.0) == pytest.approx(0.2)
