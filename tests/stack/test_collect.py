"""`vla-stack collect`: expert episodes into an episode store, resumable, checked against the spec."""
import shutil
from pathlib import Path

import numpy as np
import pytest

from components.embodiment import Embodiments
from components.episode_store import EpisodeStore
from stack.cli import main
from stack.collect import collect

FETCH = "vla_stack/FetchReach-v0"


def seeds_of(store: EpisodeStore) -> list[int]:
    return store.lowdim("episode_seed")[store.episode_ends - 1].tolist()


def tree_snapshot(path: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def fetch_store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("collect") / "reach.zarr"
    collect(env=FETCH, episodes=2, out=str(out))
    return out


def test_fetch_store_matches_the_spec_and_has_instructions(fetch_store):
    spec = Embodiments.from_config_dir(["fetch"])["fetch"]
    store = EpisodeStore.open(fetch_store)
    assert (store.embodiment, store.cameras, store.fps) == ("fetch", spec.camera_names, spec.control_hz)
    assert store.n_episodes == 2 and seeds_of(store) == [0, 1]
    episode = store.get_episode(0)
    camera = spec.cameras[0]
    assert episode["images"][camera.name].shape[1:] == (camera.height, camera.width, 3)
    assert episode["action"].shape[1] == spec.action_dim and episode["state"].shape[1] == spec.state_dim
    spec.check_range("action", episode["action"], "test")
    spec.check_range("state", episode["state"], "test")
    assert episode["success"][-1]
    assert all(text == "move the gripper to the red target" for text in store.instructions)


def test_rerun_completes_the_store_without_duplicates_or_touching_old_episodes(fetch_store, tmp_path):
    resumed = tmp_path / "reach.zarr"
    shutil.copytree(fetch_store, resumed)
    before = EpisodeStore.open(resumed)
    old = [before.get_episode(i) for i in range(2)]
    summary = collect(env=FETCH, episodes=3, out=str(resumed))
    store = EpisodeStore.open(resumed)
    assert summary["written"] == 1 and store.n_episodes == 3
    assert seeds_of(store) == [0, 1, 2]
    for i in range(2):
        np.testing.assert_array_equal(store.get_episode(i)["action"], old[i]["action"])
        np.testing.assert_array_equal(store.get_episode(i)["images"]["front"], old[i]["images"]["front"])
    assert collect(env=FETCH, episodes=3, out=str(resumed))["written"] == 0


def test_two_workers_write_the_same_episodes_in_seed_order(fetch_store, tmp_path):
    out = tmp_path / "reach2.zarr"
    collect(env=FETCH, episodes=2, out=str(out), workers=2)
    one, two = EpisodeStore.open(fetch_store), EpisodeStore.open(out)
    assert seeds_of(two) == [0, 1]
    np.testing.assert_array_equal(two.lowdim("action"), one.lowdim("action"))


def test_wheeled_actions_are_chunks_of_eight_waypoints_in_range(tmp_path):
    out = tmp_path / "hallway.zarr"
    main(["collect", "--env", "vla_stack/Wheeled-v0", "--env_kwargs", "{floorplan: hallway}",
          "--episodes", "1", "--out", str(out), "--seed", "3"])
    spec = Embodiments.from_config_dir(["wheeled"])["wheeled"]
    store = EpisodeStore.open(out)
    episode = store.get_episode(0)
    steps = len(episode["state"])
    assert episode["action"].shape == (steps, spec.chunk_horizon, 4)
    spec.check_range("action", episode["action"], "test")
    assert episode["depth"].shape == (steps, 60, 80) and episode["pose"].shape == (steps, 3)
    assert seeds_of(store) == [3] and store.instructions[0].startswith("go to")
    # waypoint k of frame 0 is the pose 5 (= 0.5 s / 0.1 s) * k steps later, seen from frame 0
    x0, z0, yaw0 = episode["pose"][0]
    x5, z5 = episode["pose"][5, :2]
    forward = (x5 - x0) * np.cos(yaw0) - (z5 - z0) * np.sin(yaw0)
    assert episode["action"][0, 0, 0] == pytest.approx(forward, abs=1e-4)


def test_failed_expert_episodes_are_discarded_and_too_many_failures_stop(tmp_path):
    one_step = {"max_episode_steps": 1}  # the reach expert rarely succeeds in one step
    summary = collect(env=FETCH, episodes=1, out=str(tmp_path / "a.zarr"), env_kwargs=one_step)
    failed = summary["discarded_seeds"]
    assert failed and failed == list(range(len(failed)))
    assert seeds_of(EpisodeStore.open(tmp_path / "a.zarr")) == [len(failed)]
    with pytest.raises(RuntimeError, match=r"discarded 1 seed\(s\) \[0\] \(expert failed"):
        collect(env=FETCH, episodes=1, out=str(tmp_path / "b.zarr"), env_kwargs=one_step, max_discarded=0)
    assert EpisodeStore.open(tmp_path / "b.zarr").n_episodes == 0


def test_episodes_out_of_the_declared_ranges_are_discarded_with_the_reason(tmp_path, monkeypatch):
    import dataclasses

    import stack.collect as collect_module

    spec = Embodiments.from_config_dir(["fetch"])["fetch"]
    # a state range that the gripper's x of seed 0's first frame already leaves
    probe = collect(env=FETCH, episodes=1, out=str(tmp_path / "probe.zarr"))
    x0 = float(EpisodeStore.open(tmp_path / "probe.zarr").get_episode(0)["state"][0, 0])
    narrow = dataclasses.replace(spec.state_slots[0], low=x0 + 0.5, high=x0 + 1.0)
    narrowed = dataclasses.replace(spec, state_slots=(narrow, *spec.state_slots[1:]))
    monkeypatch.setattr(collect_module, "_env_spec", lambda env_id: narrowed)
    with pytest.raises(RuntimeError, match=rf"(?s)discarded 1 seed\(s\) \[0\].*seed 0 \(env state\): 'state' "
                                           rf"value .* in slot '{narrow.name}' is outside the range"):
        collect(env=FETCH, episodes=1, out=str(tmp_path / "c.zarr"), max_discarded=0)
    assert EpisodeStore.open(tmp_path / "c.zarr").n_episodes == 0
    assert probe["out_of_range_seeds"] == []


def test_unknown_env_id_names_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown environment 'vla_stack/Nope-v0'.*FetchReach-v0"):
        collect(env="vla_stack/Nope-v0", episodes=1, out=str(tmp_path / "x.zarr"))
    assert not (tmp_path / "x.zarr").exists()


def test_store_of_another_embodiment_or_env_is_refused_untouched(fetch_store):
    before = tree_snapshot(fetch_store)
    with pytest.raises(ValueError, match="holds embodiment 'fetch'.*needs 'wheeled'"):
        collect(env="vla_stack/WheeledHallway-v0", episodes=1, out=str(fetch_store))
    with pytest.raises(ValueError, match="FetchReach-v0.*not from.*FetchPush-v0"):
        collect(env="vla_stack/FetchPush-v0", episodes=3, out=str(fetch_store))
    assert tree_snapshot(fetch_store) == before


def test_dart_noise_perturbs_execution_but_labels_stay_the_experts(tmp_path):
    from components.envs.fetch_expert import FetchExpert

    out = tmp_path / "noisy.zarr"
    collect(env=FETCH, episodes=1, out=str(out), noise=0.5)
    episode = EpisodeStore.open(out).get_episode(0)
    clean = tmp_path / "clean.zarr"
    collect(env=FETCH, episodes=1, out=str(clean))
    # the same seed, but the noisy run drove elsewhere ...
    assert not np.allclose(episode["state"], EpisodeStore.open(clean).get_episode(0)["state"])
    # ... and every label is what the expert says in the state the noisy run reached
    import gymnasium as gym

    env = gym.make(FETCH)
    env.reset(seed=0)
    expert = FetchExpert("reach")
    rng = np.random.default_rng([0, 1])
    for t in range(len(episode["action"])):
        label = expert.act(env.unwrapped.raw_obs)
        np.testing.assert_allclose(episode["action"][t], label, atol=1e-6)
        executed = label.copy()
        executed[:3] = np.clip(label[:3] + rng.normal(0.0, 0.5, 3), -1, 1)
        env.step(executed)
    env.close()
    with pytest.raises(ValueError, match="holds episodes from .*not from .*noise"):
        collect(env=FETCH, episodes=2, out=str(clean), noise=0.5)


def test_wheeled_expert_relabel_matches_the_driven_trajectory_without_noise():
    import gymnasium as gym

    from components.envs.wheeled_expert import WheeledExpert, expert_waypoints, future_waypoints

    env = gym.make("vla_stack/WheeledHallway-v0", image_size=(30, 40))
    _, info = env.reset(seed=3)
    expert = WheeledExpert.from_env(env)
    poses, labels = [info["pose"]], []
    for _ in range(40):
        labels.append(expert_waypoints(expert, info["pose"], env.unwrapped.dt, num=8, stride=2))
        _, _, term, trunc, info = env.step(expert.act(info["pose"]))
        poses.append(info["pose"])
        assert not (term or trunc or info["collided"])
    trajectory = np.stack(poses)
    for t in range(40 - 16):
        np.testing.assert_allclose(labels[t], future_waypoints(trajectory, t, num=8, stride=2), atol=1e-5)
    env.close()


def test_noisy_wheeled_episode_labels_are_expert_plans(tmp_path):
    out = tmp_path / "wheeled.zarr"
    collect(env="vla_stack/WheeledHallway-v0", episodes=1, out=str(out), noise=0.5)
    episode = EpisodeStore.open(out).get_episode(0)
    spec = Embodiments.from_config_dir(["wheeled"])["wheeled"]
    assert episode["action"].shape[1:] == (spec.chunk_horizon, 4)
    spec.check_range("action", episode["action"], "test")
    with pytest.raises(ValueError, match="--noise_steps .* is for aloha; wheeled is perturbed throughout"):
        collect(env="vla_stack/WheeledHallway-v0", episodes=1, out=str(tmp_path / "w.zarr"), noise=0.5,
                noise_steps=10)


def test_every_environment_has_a_scripted_expert_behind_the_one_interface():
    import inspect

    from components.envs import EMBODIMENT_OF
    from components.envs.experts import expert_class

    for embodiment in sorted(set(EMBODIMENT_OF.values())):
        cls = expert_class(embodiment)
        params = list(inspect.signature(cls.record).parameters)
        assert params == ["self", "env", "seed", "noise", "noise_steps"], (embodiment, params)
        assert callable(cls.from_spec) and isinstance(cls.noise_window, bool)


def test_measure_expert_counts_the_episodes_collect_stores(fetch_store):
    from components.envs.experts import measure_expert

    report = measure_expert(FETCH, seeds=[0, 1], image_size=(24, 32))
    assert (report["successes"], report["failed_seeds"], report["episodes"]) == (2, [], 2)
    assert report["steps"] == EpisodeStore.open(fetch_store).n_frames
    with pytest.raises(ValueError, match="--noise_steps .* is for aloha; fetch is perturbed throughout"):
        measure_expert(FETCH, seeds=[0], noise=0.1, noise_steps=5)
