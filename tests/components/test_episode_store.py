import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from components.episode_store import EpisodeStore

CAMERAS = ["top", "wrist"]
REPO_ROOT = Path(__file__).resolve().parents[2]


def make_episode(i: int, *, image_hw: int = 8, action_width: int = 4) -> dict:
    """Deterministic content for episode ``i``: T = 5 + i frames."""
    rng = np.random.default_rng(i)
    n = 5 + i
    return {
        "action": rng.normal(size=(n, action_width)).astype(np.float32),
        "state": rng.normal(size=(n, 3)).astype(np.float32),
        "images": {
            cam: rng.integers(0, 256, size=(n, image_hw, image_hw, 3), dtype=np.uint8)
            for cam in CAMERAS
        },
        "depth": rng.random(size=(n, image_hw, image_hw)).astype(np.float32),
        "pose": rng.normal(size=(n, 7)),
    }


def assert_episode_equal(got: dict, want: dict) -> None:
    assert set(got) - {"instruction"} == set(want)
    for key, value in want.items():
        if key == "images":
            assert set(got["images"]) == set(value)
            for cam, frames in value.items():
                np.testing.assert_array_equal(got["images"][cam], frames)
        else:
            np.testing.assert_array_equal(got[key], value)
            assert got[key].dtype == value.dtype


def new_store(tmp_path, **kwargs) -> EpisodeStore:
    return EpisodeStore.create(
        tmp_path / "store.zarr", embodiment="aloha", fps=50.0, cameras=CAMERAS, **kwargs
    )


def test_append_and_get_round_trip(tmp_path):
    store = new_store(tmp_path)
    episodes = [make_episode(i) for i in range(3)]
    for i, ep in enumerate(episodes):
        assert store.append_episode(ep, f"task {i}") == i

    reader = EpisodeStore.open(tmp_path / "store.zarr")
    assert reader.n_episodes == 3
    assert reader.n_frames == 5 + 6 + 7
    np.testing.assert_array_equal(reader.episode_ends, [5, 11, 18])
    assert reader.embodiment == "aloha" and reader.fps == 50.0 and reader.cameras == CAMERAS
    assert reader.instructions == ["task 0", "task 1", "task 2"]
    assert reader.keys == ["action", "depth", "images/top", "images/wrist", "pose", "state"]
    assert reader.episode_slice(1) == slice(5, 11)
    for i, ep in enumerate(episodes):
        got = reader.get_episode(i)
        assert got["instruction"] == f"task {i}"
        assert_episode_equal(got, ep)

    frame = reader.get_frame(6, keys=["state", "images/wrist"])
    assert set(frame) == {"state", "images", "instruction"}
    np.testing.assert_array_equal(frame["state"], episodes[1]["state"][1])
    np.testing.assert_array_equal(frame["images"]["wrist"], episodes[1]["images"]["wrist"][1])
    assert frame["instruction"] == "task 1"
    assert [reader.episode_of(t) for t in (0, 4, 5, 10, 11, 17)] == [0, 0, 1, 1, 2, 2]
    with pytest.raises(IndexError):
        reader.episode_of(18)


def test_images_are_zstd_compressed_in_100_frame_chunks(tmp_path):
    store = new_store(tmp_path)
    store.append_episode(make_episode(0), "task")
    images = zarr.open_group(str(tmp_path / "store.zarr"), mode="r")["data/images/top"]
    assert images.chunks[0] == 100
    assert images.dtype == np.uint8
    assert [type(c).__name__ for c in images.compressors] == ["ZstdCodec"]
    assert images.compressors[0].level == 3


def test_window_past_episode_end_repeats_last_action_and_masks_padding(tmp_path):
    store = new_store(tmp_path)
    first, second = make_episode(0), make_episode(1)
    store.append_episode(first, "a")
    store.append_episode(second, "b")

    actions, time_mask = store.get_window(3, horizon=4)  # episode 0 ends at frame 5
    assert actions.shape == (4, 4) and time_mask.dtype == bool
    np.testing.assert_array_equal(time_mask, [True, True, False, False])
    np.testing.assert_array_equal(actions[:2], first["action"][3:5])
    np.testing.assert_array_equal(actions[2:], first["action"][[4, 4]])

    actions, time_mask = store.get_window(5, horizon=3)  # inside episode 1: no padding
    assert time_mask.all()
    np.testing.assert_array_equal(actions, second["action"][:3])


def test_window_of_precomputed_chunks_is_the_frames_own_chunk(tmp_path):
    store = new_store(tmp_path)
    episode = make_episode(0)
    episode["action"] = np.arange(5 * 8 * 4, dtype=np.float32).reshape(5, 8, 4)
    store.append_episode(episode, "waypoints")

    actions, time_mask = store.get_window(4, horizon=50)
    np.testing.assert_array_equal(actions, episode["action"][4])
    assert time_mask.shape == (8,) and time_mask.all()


def test_width_mismatch_names_store_key_and_widths(tmp_path):
    store = new_store(tmp_path)
    store.append_episode(make_episode(0, action_width=4), "a")
    with pytest.raises(ValueError) as err:
        store.append_episode(make_episode(1, action_width=7), "b")
    message = str(err.value)
    assert str(tmp_path / "store.zarr") in message
    assert "'action'" in message and "(4,)" in message and "(7,)" in message
    assert store.n_episodes == 1


def test_non_finite_action_names_key_and_first_bad_frame(tmp_path):
    store = new_store(tmp_path)
    episode = make_episode(0)
    episode["state"][3, 1] = np.nan
    episode["state"][4, 0] = np.inf
    with pytest.raises(ValueError, match=r"'state'.*frame 3"):
        store.append_episode(episode, "a")


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda ep: ep["images"].pop("wrist"), r"missing \['wrist'\]"),
        (lambda ep: ep["images"].update(side=ep["images"]["top"]), r"undeclared \['side'\]"),
        (lambda ep: ep["images"].update(top=ep["images"]["top"][..., :1]), r"images/top"),
        (lambda ep: ep["images"].update(top=ep["images"]["top"].astype(np.float32)), "uint8"),
        (lambda ep: ep.update(pose=ep["pose"][:-1]), "same T"),
    ],
)
def test_malformed_episode_is_rejected(tmp_path, edit, pattern):
    store = new_store(tmp_path)
    episode = make_episode(0)
    edit(episode)
    with pytest.raises(ValueError, match=pattern):
        store.append_episode(episode, "a")


def test_reopening_and_appending_continues_the_indices(tmp_path):
    store = new_store(tmp_path)
    store.append_episode(make_episode(0), "a")
    store.append_episode(make_episode(1), "b")

    store = EpisodeStore.open(tmp_path / "store.zarr", mode="a")
    assert store.append_episode(make_episode(2), "c") == 2
    reader = EpisodeStore.open(tmp_path / "store.zarr")
    assert reader.instructions == ["a", "b", "c"]
    np.testing.assert_array_equal(reader.episode_ends, [5, 11, 18])
    assert_episode_equal(reader.get_episode(2), make_episode(2))


def test_read_only_store_refuses_appends(tmp_path):
    new_store(tmp_path)
    reader = EpisodeStore.open(tmp_path / "store.zarr")
    with pytest.raises(ValueError, match="read-only"):
        reader.append_episode(make_episode(0), "a")


def test_open_names_the_path_when_it_is_not_a_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.zarr"):
        EpisodeStore.open(tmp_path / "missing.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="plain"):
        EpisodeStore.open(tmp_path / "plain")
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    with pytest.raises(ValueError, match="other.zarr"):
        EpisodeStore.open(tmp_path / "other.zarr")
    with pytest.raises(FileExistsError, match="other.zarr"):
        EpisodeStore.create(tmp_path / "other.zarr", embodiment="x", fps=1.0, cameras=[])


def test_failed_first_append_does_not_fix_the_widths(tmp_path):
    store = new_store(tmp_path)

    def crash():
        raise RuntimeError("writer died before the commit")

    with pytest.raises(RuntimeError):
        store.append_episode(make_episode(0, action_width=4), "lost", _before_commit=crash)
    assert store.n_episodes == 0

    store = EpisodeStore.open(tmp_path / "store.zarr", mode="a")
    assert store.append_episode(make_episode(1, action_width=7), "kept") == 0
    assert_episode_equal(store.get_episode(0), make_episode(1, action_width=7))
    assert store.instructions == ["kept"]


_CHILD = """
import sys, time
sys.path.insert(0, {tests_dir!r})
from test_episode_store import make_episode
from components.episode_store import EpisodeStore

def pause_before_commit():
    print("paused", flush=True)
    time.sleep(600)

store = EpisodeStore.open({path!r}, mode="a")
for i in range(10):
    hook = pause_before_commit if i == 2 else None
    store.append_episode(make_episode(i, image_hw=96), f"task {{i}}", _before_commit=hook)
    print(f"committed {{i}}", flush=True)
"""


def test_killed_writer_leaves_only_whole_episodes(tmp_path):
    path = tmp_path / "store.zarr"
    new_store(tmp_path)
    code = _CHILD.format(tests_dir=str(Path(__file__).parent), path=str(path))
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        while (line := child.stdout.readline().strip()) != "paused":
            assert line, f"writer exited early: {lines} {child.stderr.read()}"
            lines.append(line)
        assert lines == ["committed 0", "committed 1"]
        # The child has written episode 2's data and instruction, not its end index.
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
        child.stderr.close()

    raw = zarr.open_group(str(path), mode="r")
    committed = 5 + 6
    assert raw["data/action"].shape[0] == committed + 7, "the kill must land after the data write"
    assert len(raw.attrs["instructions"]) == 3

    reader = EpisodeStore.open(path)
    assert reader.n_episodes == 2 and reader.n_frames == committed
    assert reader.instructions == ["task 0", "task 1"]
    for i in range(2):
        assert_episode_equal(reader.get_episode(i), make_episode(i, image_hw=96))
    with pytest.raises(IndexError):
        reader.get_frame(committed)

    writer = EpisodeStore.open(path, mode="a")
    raw = zarr.open_group(str(path), mode="r")
    assert all(raw[f"data/{key}"].shape[0] == committed for key in writer.keys)
    assert raw.attrs["instructions"] == ["task 0", "task 1"]
    replacement = make_episode(5, image_hw=96)
    assert writer.append_episode(replacement, "task again") == 2

    reader = EpisodeStore.open(path)
    assert reader.n_episodes == 3
    np.testing.assert_array_equal(reader.episode_ends, [5, 11, 21])
    assert reader.instructions == ["task 0", "task 1", "task again"]
    assert_episode_equal(reader.get_episode(2), replacement)
    assert all(raw[f"data/{key}"].shape[0] == 21 for key in reader.keys)


def test_crash_between_resizing_and_writing_the_end_index_is_ignored(tmp_path):
    store = new_store(tmp_path)
    store.append_episode(make_episode(0), "a")
    store.append_episode(make_episode(1), "b")
    # What a writer killed inside the commit leaves: episode_ends grown, new value unwritten.
    ends = zarr.open_group(str(tmp_path / "store.zarr"), mode="r+")["meta/episode_ends"]
    ends.resize((3,))

    assert EpisodeStore.open(tmp_path / "store.zarr").n_episodes == 2
    writer = EpisodeStore.open(tmp_path / "store.zarr", mode="a")
    assert writer.append_episode(make_episode(2), "c") == 2
    reader = EpisodeStore.open(tmp_path / "store.zarr")
    np.testing.assert_array_equal(reader.episode_ends, [5, 11, 18])


def long_episode(i: int, n: int) -> dict:
    """``make_episode(i)``'s arrays grown to ``n`` frames of fresh random content."""
    rng = np.random.default_rng(100 + i)
    episode = make_episode(i)

    def grow(v):
        return rng.integers(0, 256, (n, *v.shape[1:]), dtype=np.uint8) if v.dtype == np.uint8 \
            else rng.normal(size=(n, *v.shape[1:])).astype(v.dtype)
    return {k: ({c: grow(f) for c, f in v.items()} if k == "images" else grow(v)) for k, v in episode.items()}


def damaged_store(tmp_path, episodes=(60, 60, 60), key="images/top", chunk=1):
    """A store with frames in 100-frame image chunks, and chunk ``chunk`` of ``key`` cut short."""
    store = new_store(tmp_path)
    for i, n in enumerate(episodes):
        store.append_episode(long_episode(i, n), f"task {i}")
    array = zarr.open_group(str(tmp_path / "store.zarr"), mode="r")[f"data/{key}"]
    coords = (chunk,) + (0,) * (array.ndim - 1)
    path = tmp_path / "store.zarr" / array.path / array.metadata.chunk_key_encoding.encode_chunk_key(coords)
    path.write_bytes(path.read_bytes()[:40])
    return tmp_path / "store.zarr", path


def test_damaged_chunk_names_store_array_frames_episodes_and_recovery(tmp_path):
    from components.errors import StoreError
    path, chunk_file = damaged_store(tmp_path)
    store = EpisodeStore.open(path)
    assert store.get_frame(99)["images"]["top"].shape == (8, 8, 3)  # chunk 0 still reads
    with pytest.raises(StoreError) as err:
        store.get_frame(130)
    message = str(err.value)
    assert f"episode store {path}: data/images/top frames 100..179 (episode(s) [1, 2])" in message
    assert str(chunk_file) in message and "Zstd" in message
    assert "collect these episodes again" in message and "--data.skip_damaged_episodes=true" in message
    with pytest.raises(StoreError, match=r"frames 100\.\.179"):
        store.get_episode(2)


def test_damaged_episodes_are_those_that_overlap_an_unreadable_chunk(tmp_path):
    path, _ = damaged_store(tmp_path, episodes=(60, 60, 60, 60), chunk=2)  # frames 200..239: episode 3
    store = EpisodeStore.open(path)
    assert list(store.damaged_episodes()) == [3]
    assert store.damaged_episodes(["action", "state"]) == {} and store.skipped == {}
    assert list(EpisodeStore.open(path, skip_damaged=True).skipped) == [3]


def test_skip_damaged_fills_unreadable_small_array_rows_instead_of_raising(tmp_path):
    from components.errors import StoreError
    path, _ = damaged_store(tmp_path, key="action", chunk=0)
    with pytest.raises(StoreError, match=r"data/action frames 0\.\.179 \(episode\(s\) \[0, 1, 2\]\)"):
        EpisodeStore.open(path).lowdim("action")
    store = EpisodeStore.open(path, skip_damaged=True)
    assert np.isnan(store.lowdim("action")).all() and list(store.skipped) == [0, 1, 2]
    np.testing.assert_array_equal(store.lowdim("state")[:60], long_episode(0, 60)["state"])


def test_damaged_index_is_a_store_error(tmp_path):
    from components.errors import StoreError
    new_store(tmp_path).append_episode(make_episode(0), "a")
    (tmp_path / "store.zarr/meta/episode_ends/c/0").write_bytes(b"junk")
    with pytest.raises(StoreError, match="meta/episode_ends cannot be read"):
        EpisodeStore.open(tmp_path / "store.zarr")
