"""`vla-stack run`: closed-loop episodes with a randomly initialised tiny checkpoint (it fails the tasks;
these tests check the runner's behaviour, not the policy's skill)."""
import json

import pytest

from stack.results import wilson_interval
from stack.runner import run

WHEELED = "vla_stack/WheeledHallway-v0"
FETCH = "vla_stack/FetchReach-v0"


@pytest.mark.parametrize("k, n, expected", [
    # z = 1.959964, z^2/n = 0.384146: at 0/n the upper bound is (z^2/n) / (1 + z^2/n) = 0.277533
    (0, 10, (0.0, 0.277533)),
    # at 5/10 the centre is 0.5, half width z / (1 + z^2/n) * sqrt(0.025 + z^2/400) = 0.263407
    (5, 10, (0.236593, 0.763407)),
    (10, 10, (0.722467, 1.0)),
    (0, 0, (0.0, 1.0)),
])
def test_wilson_interval_matches_hand_computed_values(k, n, expected):
    assert wilson_interval(k, n) == pytest.approx(expected, abs=1e-6)


def test_wilson_interval_rejects_impossible_counts():
    with pytest.raises(ValueError, match="need 0 <= successes <= n"):
        wilson_interval(11, 10)


@pytest.fixture(scope="module")
def wheeled_run(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = run(WHEELED, tiny_checkpoint, episodes=2, seed=5, max_steps=7, num_flow_steps=2,
                 video=str(out / "roll.mp4"), video_episodes=1, json=str(out / "result.json"))
    return result, out


def test_run_writes_the_design_result_json(wheeled_run):
    result, out = wheeled_run
    saved = json.loads((out / "result.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["env"] == WHEELED and saved["episodes"] == 2 and saved["seeds"] == [5, 6]
    assert saved["successes"] == sum(e["success"] for e in saved["per_episode"])
    assert saved["success_rate"] == saved["successes"] / 2
    lo, hi = saved["ci95"]
    assert (lo, hi) == pytest.approx(wilson_interval(saved["successes"], 2))
    assert saved["candidates"] == 1 and "world_model" not in saved and "imagine_ms" not in saved
    assert saved["clipped_actions"] == sum(e["clipped_actions"] for e in saved["per_episode"])
    assert saved["nonfinite_actions"] == 0
    for key in ("decision_ms", "policy_ms"):
        assert set(saved[key]) == {"p50", "p95"} and 0 < saved[key]["p50"] <= saved[key]["p95"]
    assert saved["execute_horizon"] == 5  # one waypoint spacing of the wheeled base
    for ep in saved["per_episode"]:
        assert ep["steps"] == 7 and not ep["success"] and ep["end"] == "max_steps"
        assert len(ep["policy_ms"]) == 2  # a new chunk every 5 steps: at steps 0 and 5
        assert ep["replans"] == 1 and isinstance(ep["return"], float)
    assert saved["replans"] == 2 and saved["decisions"] == 4
    assert saved["max_reward_counts"] is None  # the wheeled reward is not staged (aloha's is)
    assert all(isinstance(ep["max_reward"], float) for ep in saved["per_episode"])


def test_video_has_one_annotated_frame_per_step_of_the_recorded_episodes(wheeled_run):
    import imageio.v3 as iio
    result, out = wheeled_run
    frames = list(iio.imiter(out / "roll.mp4", plugin="pyav"))
    assert len(frames) == result["per_episode"][0]["steps"] + 1  # reset + every step of episode 0 only
    assert frames[0].shape[0] >= 240
    # the 60x80 camera (upscaled 4x) with the floor plan's top view beside it
    assert frames[0].shape[1] >= 2 * 80 * 4
    assert result["video"] == str(out / "roll.mp4")
    assert not list(out.glob(".roll*"))  # no temporary file left


def test_cli_run_prints_the_summary_line(tiny_checkpoint, capsys):
    from stack.cli import main
    main(["run", "--env", FETCH, "--policy", tiny_checkpoint, "--episodes", "1", "--max_steps", "12",
          "--num_flow_steps", "2"])
    out = capsys.readouterr().out
    assert f"{FETCH}: 0/1 success (0.00, 95% CI [0.00, 0.79]), decision p50 " in out


def test_temporal_ensemble_decides_every_step(tiny_checkpoint):
    result = run(FETCH, tiny_checkpoint, episodes=1, max_steps=3, temporal_ensemble=True, num_flow_steps=2)
    assert result["execute_horizon"] == 1 and result["decisions"] == 3


def test_fetch_ensembles_by_default_unless_told_otherwise(tiny_checkpoint):
    default = run(FETCH, tiny_checkpoint, episodes=1, max_steps=3, num_flow_steps=2)
    assert default["temporal_ensemble"] is True and default["decisions"] == 3
    for kwargs in ({"temporal_ensemble": False}, {"execute_horizon": 10}):
        chunked = run(FETCH, tiny_checkpoint, episodes=1, max_steps=3, num_flow_steps=2, **kwargs)
        assert chunked["temporal_ensemble"] is False and chunked["execute_horizon"] == 10
        assert chunked["decisions"] == 1  # one chunk of 10 covers the 3 steps


@pytest.fixture
def no_env(monkeypatch):
    import gymnasium
    monkeypatch.setattr(gymnasium, "make", lambda *a, **k: pytest.fail("an env was made despite bad input"))


def test_unknown_env_is_a_clear_error(tiny_checkpoint, no_env):
    with pytest.raises(ValueError, match=r"--env: unknown environment 'vla_stack/Nope-v0'; known: \["):
        run("vla_stack/Nope-v0", tiny_checkpoint)


def test_missing_policy_dir_is_a_clear_error(tmp_path, no_env):
    with pytest.raises(FileNotFoundError, match=r"--policy: checkpoint directory '.*nowhere' does not exist"):
        run(FETCH, str(tmp_path / "nowhere"))


def test_policy_without_the_envs_embodiment_is_a_clear_error(tiny_checkpoint, no_env, monkeypatch):
    from components.policy import Policy
    monkeypatch.setattr(Policy, "embodiments", property(lambda self: ["fetch", "wheeled"]))
    with pytest.raises(ValueError, match=r"does not know embodiment 'aloha' \(needed by "
                                         r"vla_stack/AlohaTransferCube-v0\); it knows \['fetch', 'wheeled'\]"):
        run("vla_stack/AlohaTransferCube-v0", tiny_checkpoint)


@pytest.mark.parametrize("kwargs, message", [
    ({"execute_horizon": 11}, r"--execute_horizon: 11 is outside 1..10 for fetch"),
    ({"temporal_ensemble": True, "execute_horizon": 4}, r"--temporal_ensemble decides every step"),
])
def test_bad_options_are_rejected_before_any_env_is_made(tiny_checkpoint, no_env, kwargs, message):
    with pytest.raises(ValueError, match=message):
        run(FETCH, tiny_checkpoint, **kwargs)


def test_more_than_one_candidate_is_refused_until_something_ranks_them(tiny_checkpoint, no_env):
    with pytest.raises(ValueError, match=r"--candidates 4 with --world_model none: nothing ranks the candidates"):
        run(FETCH, tiny_checkpoint, candidates=4)


def test_temporal_ensemble_is_refused_for_waypoints(tiny_checkpoint, no_env):
    with pytest.raises(ValueError, match=r"--temporal_ensemble: not available for wheeled"):
        run(WHEELED, tiny_checkpoint, temporal_ensemble=True)
