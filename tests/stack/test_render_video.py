"""``vla-stack render-video``: rendered video episodes, their labels against the poses sidecar, the store's
shapes against the `video` spec, resuming, the splits, and bad input."""
import os

os.environ.setdefault("PYGLET_HEADLESS", "true")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

from pathlib import Path

import numpy as np
import pytest

from components.embodiment import PAST_CAMERA, Embodiments
from components.episode_store import EpisodeStore
from components.trajectory_eval import PoseTrack, sidecar_path, true_waypoints
from components.video_data import EpisodeRenderer, RenderConfig
from stack.render_video import render_video

STEPS = 12  # stored frames per episode (1.2 s); the drive goes on 4 s more for the labels


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Two episodes of the training split on one floor plan and one stock scene, with their videos."""
    root = tmp_path_factory.mktemp("render")
    out, videos = root / "video.zarr", root / "videos"
    summary = render_video(str(out), episodes=2, seed=0, floorplans=["three_rooms", "MiniWorld-FourRooms-v0"],
                           videos_dir=str(videos), episode_steps=STEPS)
    return out, videos, summary


def spec():
    return Embodiments.from_config_dir(["video"])["video"]


def test_stored_labels_are_the_sidecar_poses_through_true_waypoints(rendered):
    out, videos, _ = rendered
    store = EpisodeStore.open(out)
    s = spec()
    mp4s = sorted(videos.glob("*.mp4"))
    assert len(mp4s) == store.n_episodes == 2
    for i in range(store.n_episodes):
        episode = store.get_episode(i)
        seed = int(episode["episode_seed"][0])
        (video,) = [v for v in mp4s if v.stem.endswith(f"_{seed:06d}")]
        track = PoseTrack.read(sidecar_path(video))
        assert len(track.t_s) == STEPS + s.chunk_horizon * round(s.waypoint_spacing_s * s.control_hz)
        for t in range(STEPS):
            truth = true_waypoints(track, t / s.control_hz, s.waypoint_spacing_s, s.chunk_horizon)
            np.testing.assert_allclose(episode["action"][t], truth, atol=1e-5)


def test_store_shapes_and_masks_match_the_video_spec(rendered):
    out, _, _ = rendered
    s = spec()
    store = EpisodeStore.open(out)
    assert (store.embodiment, store.cameras, store.fps) == ("video", s.camera_names, s.control_hz)
    episode = store.get_episode(0)
    for camera in s.cameras:
        assert episode["images"][camera.name].shape == (STEPS, camera.height, camera.width, 3)
    past = round(s.past_frame_s * s.control_hz)
    front = episode["images"]["front"]
    np.testing.assert_array_equal(episode["images"][PAST_CAMERA][past:], front[:-past])
    np.testing.assert_array_equal(episode["images"][PAST_CAMERA][:past], front[[0] * past])
    assert episode["action"].shape == (STEPS, s.chunk_horizon, len(s.action_slots))
    assert episode["state"].shape == (STEPS, 0)
    s.check_range("action", episode["action"], "rendered labels")
    np.testing.assert_allclose(np.hypot(episode["action"][..., 2], episode["action"][..., 3]), 1.0, atol=1e-5)
    # what training sees: the spec's four waypoint slots of the canonical vector, eight steps
    window, time_mask = store.get_window(0, s.chunk_horizon)
    assert window.shape == (s.chunk_horizon, 4) and time_mask.all()
    assert int(s.action_mask.sum()) == 4


def test_a_resumed_run_appends_whole_episodes_and_keeps_the_old_ones(rendered, tmp_path):
    out, _, summary = rendered
    assert summary["written"] == 2 and summary["rendered_frames_per_s"] > 0
    copy = tmp_path / "copy.zarr"
    import shutil
    shutil.copytree(out, copy)
    before = EpisodeStore.open(copy).get_episode(1)
    again = render_video(str(copy), episodes=3, seed=0, floorplans=["three_rooms", "MiniWorld-FourRooms-v0"],
                         episode_steps=STEPS)
    store = EpisodeStore.open(copy)
    assert again["written"] == 1 and store.n_episodes == 3
    assert list(store.episode_ends) == [STEPS, 2 * STEPS, 3 * STEPS]
    assert [int(store.get_episode(i)["episode_seed"][0]) for i in range(3)] == [0, 1, 2]
    np.testing.assert_array_equal(store.get_episode(1)["images"]["front"], before["images"]["front"])
    # the same seed renders the same episode
    np.testing.assert_allclose(store.get_episode(1)["action"], before["action"])


def test_a_killed_run_leaves_whole_episodes(tmp_path, monkeypatch):
    import components.video_data as vd

    out = tmp_path / "killed.zarr"
    calls = {"n": 0}
    original = vd.EpisodeRenderer.__call__

    def dies_on_the_second(self, seed):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, seed)
    monkeypatch.setattr(vd.EpisodeRenderer, "__call__", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        render_video(str(out), episodes=3, floorplans=["three_rooms"], episode_steps=STEPS)
    store = EpisodeStore.open(out)
    assert store.n_episodes == 1 and store.n_frames == STEPS


def test_heldout_split_shares_no_floor_plan_or_texture_with_train():
    config = RenderConfig.load()
    train, heldout = config.split("train"), config.split("heldout")
    assert len(heldout.floorplans) >= 2
    assert not set(train.floorplans) & set(heldout.floorplans)
    assert not set(train.stock_scenes) & set(heldout.stock_scenes)
    held = set(heldout.wall_textures + heldout.floor_textures + heldout.ceiling_textures)
    assert not held & set(train.wall_textures + train.floor_textures + train.ceiling_textures)


def test_looks_and_drivers_vary_with_the_seed():
    renderer = EpisodeRenderer(spec(), RenderConfig.load(), "heldout", steps=4)
    try:
        episodes = [renderer(seed) for seed in range(6)]
    finally:
        renderer.close()
    heldout = RenderConfig.load().split("heldout")
    assert {e.scene for e in episodes} <= set(heldout.floorplans)
    assert len({e.look.fov_y_deg for e in episodes}) == 6
    for e in episodes:
        assert set(e.look.wall_tex) <= set(heldout.wall_textures)
    assert len({e.driver for e in episodes}) >= 2
    assert len({e.frames["images"]["front"][0].tobytes() for e in episodes}) == 6


@pytest.mark.parametrize("args,message", [
    (["--floorplans", "[no_such_plan]"], "unknown floor plan 'no_such_plan'"),
    (["--floorplans", "[clinic]"], "belongs to split 'heldout'"),
    (["--floorplans", "[MiniWorld-NoSuchScene-v0]"], "unknown MiniWorld scene"),
    (["--seed", "-3"], "--seed must be >= 0"),
    (["--split", "test"], "unknown split 'test'"),
])
def test_bad_input_is_a_one_line_error(args, message, tmp_path, capsys):
    from stack.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["render-video", "--out", str(tmp_path / "x.zarr"), "--episodes", "1", "--episode_steps", "2", *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_unwritable_output_is_a_one_line_error(tmp_path, capsys):
    from stack.cli import main

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exit_:
        main(["render-video", "--out", str(blocker / "x.zarr"), "--episodes", "1"])
    assert exit_.value.code == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert not Path(blocker / "x.zarr").exists()
