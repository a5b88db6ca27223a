"""The episode loop of planners/: executors and the Decider interface, in the real wheeled env."""
import math

import gymnasium as gym
import numpy as np
import pytest

import components.envs  # noqa: F401  (registers the envs)
from components.embodiment import Embodiments
from planners.episode import Decision, run_episode
from planners.executors import ChunkExecutor, TemporalEnsemble


def test_chunk_executor_runs_the_first_execute_horizon_actions_then_asks_again():
    ex = ChunkExecutor(execute_horizon=3)
    assert ex.needs_chunk()
    ex.set_chunk(np.arange(10.0)[:, None])
    assert [float(ex.action()[0]) for _ in range(3)] == [0.0, 1.0, 2.0]
    assert ex.needs_chunk()


def test_cut_makes_the_executor_ask_for_a_new_chunk():
    ex = ChunkExecutor(execute_horizon=5)
    ex.set_chunk(np.zeros((5, 1)))
    ex.action()
    assert not ex.needs_chunk()
    ex.cut()
    assert ex.needs_chunk()


def test_temporal_ensemble_weights_older_chunks_more():
    te = TemporalEnsemble(horizon=4, decay=0.5)
    te.set_chunk(np.zeros((4, 1)))
    assert te.action()[0] == 0.0
    te.set_chunk(np.ones((4, 1)))
    w_old, w_new = 1.0, math.exp(-0.5)  # step 1 is covered by both chunks; the oldest weighs 1
    assert te.action()[0] == pytest.approx(w_new / (w_old + w_new))


class StraightAhead:
    """A Decider that drives forward; ``replan_every_step`` asks for a new chunk after every step."""

    def __init__(self, replan_every_step: bool):
        self.replan_every_step = replan_every_step
        self.steps_seen = 0
        self.seeds = []

    def reset(self, episode_seed):
        self.seeds.append(episode_seed)

    def decide(self, obs, instruction):
        x = 0.3 * np.arange(1, 9)
        return Decision(np.stack([x, 0 * x, 1 + 0 * x, 0 * x], axis=1).astype(np.float32))

    def on_step(self, obs, action, reward, info):
        self.steps_seen += 1
        return self.replan_every_step


@pytest.fixture(scope="module")
def hallway():
    env = gym.make("vla_stack/WheeledHallway-v0")
    yield env
    env.close()


@pytest.mark.parametrize("replan, decisions", [(False, 2), (True, 7)])
def test_on_step_sees_every_step_and_true_cuts_the_chunk(hallway, replan, decisions):
    spec = Embodiments.from_config_dir(["wheeled"])["wheeled"]
    decider = StraightAhead(replan_every_step=replan)
    rec = run_episode(hallway, decider, spec, seed=3, max_steps=7)
    assert decider.seeds == [3] and decider.steps_seen == 7 and rec.steps == 7
    assert len(rec.decision_ms) == decisions  # chunks of 5 steps at steps 0 and 5, or one per step
    # a cut is a surprise replan; the rest are scheduled
    assert rec.surprise_replans == (decisions - 1 if replan else 0)
    assert rec.replans == (0 if replan else decisions - 1)
