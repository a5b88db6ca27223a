"""`run --num_envs N`: N envs in worker processes, their policy calls batched, the same seeded episodes as
one env at a time (tiny random checkpoint: it checks the loop, not skill)."""
import pytest

from components.errors import UsageError
from stack.runner import run


@pytest.mark.parametrize("env, max_steps", [("vla_stack/FetchReach-v0", 12), ("vla_stack/WheeledHallway-v0", 11)])
def test_two_envs_give_the_episodes_of_one(tiny_checkpoint, env, max_steps):
    kw = dict(episodes=3, seed=40, max_steps=max_steps, num_flow_steps=2)
    one = run(env, tiny_checkpoint, **kw)
    two = run(env, tiny_checkpoint, num_envs=2, **kw)
    assert two["num_envs"] == 2 and two["seeds"] == one["seeds"] == [40, 41, 42]
    for a, b in zip(one["per_episode"], two["per_episode"]):
        assert (a["seed"], a["success"], a["steps"], a["end"], a["replans"]) == \
               (b["seed"], b["success"], b["steps"], b["end"], b["replans"])
        assert b["return"] == pytest.approx(a["return"], abs=1e-4)
        assert len(b["policy_ms"]) == len(a["policy_ms"])
    assert two["decisions"] == one["decisions"]


def test_num_envs_refuses_what_it_cannot_batch(tiny_checkpoint, tmp_path):
    with pytest.raises(UsageError, match="--num_envs must be >= 1"):
        run("vla_stack/FetchReach-v0", tiny_checkpoint, episodes=1, num_envs=0)
    with pytest.raises(UsageError, match="--record and --video run with --num_envs 1"):
        run("vla_stack/FetchReach-v0", tiny_checkpoint, episodes=1, num_envs=2, video=str(tmp_path / "v.mp4"))
    with pytest.raises(UsageError, match="--record and --video run with --num_envs 1"):
        run("vla_stack/FetchReach-v0", tiny_checkpoint, episodes=1, num_envs=2, candidates=4, scorer="random")
