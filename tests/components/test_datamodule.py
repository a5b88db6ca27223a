from collections import Counter

import numpy as np
import pytest

from components.datamodule import DatasetEntry, MixtureDataModule
from components.embodiment import EmbodimentError, Embodiments
from components.episode_store import EpisodeStore
from components.normalization import load_stats


def test_mixture_draws_embodiments_by_weight(synthetic_stores):
    dm = MixtureDataModule([DatasetEntry(synthetic_stores["fetch"], 3.0), DatasetEntry(synthetic_stores["wheeled"], 1.0)],
                           batch_size=8, num_workers=0, samples_per_epoch=2000)
    dm.setup("fit")
    sampler = dm.train_dataloader().sampler
    stores = [dm.train_set.paths[int(np.searchsorted(dm.train_set.offsets, i, side="right") - 1)] for i in sampler]
    share = Counter(stores)[synthetic_stores["fetch"]] / len(stores)
    assert 0.70 < share < 0.80  # 3:1 weights -> 75 %


def test_first_frames_trains_on_the_start_of_each_episode_only(synthetic_stores):
    path = synthetic_stores["fetch"]
    store = EpisodeStore.open(path)
    dm = MixtureDataModule([DatasetEntry(path, first_frames=3)], num_workers=0, val_episodes=1)
    dm.setup("fit")
    starts = np.r_[0, store.episode_ends[:-1]]
    expected = np.concatenate([np.arange(a, a + 3) for a in starts[:-1]])  # the last episode is validation
    np.testing.assert_array_equal(dm.train_set.frames[0], expected)
    assert len(dm.val_set.frames[0]) == store.n_frames - starts[-1]  # validation keeps whole episodes
    with pytest.raises(ValueError, match="first_frames must be a positive number of frames, got 0"):
        DatasetEntry(path, first_frames=0)


def test_oversampled_starts_count_once_in_the_stats_and_draw_their_share(synthetic_stores):
    path = synthetic_stores["fetch"]
    store = EpisodeStore.open(path)
    once = MixtureDataModule([DatasetEntry(path)], num_workers=0)
    listed_twice = MixtureDataModule([DatasetEntry(path), DatasetEntry(path, first_frames=1)], num_workers=0)
    oversampled = MixtureDataModule([DatasetEntry(path, 1.0, oversample=[{"first_frames": 1, "weight": 1.0}])],
                                    num_workers=0, samples_per_epoch=4000)
    for dm in (once, listed_twice, oversampled):
        dm.setup("fit")
    b = once.processor.stats("fetch")["action"]
    for a in (listed_twice.processor.stats("fetch")["action"], oversampled.processor.stats("fetch")["action"]):
        assert a.count == b.count == store.n_frames
        np.testing.assert_array_equal(a.q01, b.q01), np.testing.assert_array_equal(a.q99, b.q99)
    starts = set(np.r_[0, store.episode_ends[:-1]].tolist())
    ds = oversampled.train_set
    frames = [int(ds.frames[j][i - ds.offsets[j]])
              for i in oversampled.train_dataloader().sampler
              for j in [int(np.searchsorted(ds.offsets, i, side="right") - 1)]]
    share = np.mean([f in starts for f in frames])
    n_eps = len(starts)
    expected = 0.5 + 0.5 * n_eps / store.n_frames  # the oversampled starts, plus starts drawn by the whole store
    assert abs(share - expected) < 0.05


def test_oversample_draws_exactly_what_listing_the_store_again_with_first_frames_draws(synthetic_stores):
    fetch, wheeled = synthetic_stores["fetch"], synthetic_stores["wheeled"]
    listed = [DatasetEntry(fetch, 1.0), DatasetEntry(fetch, 0.4, first_frames=5), DatasetEntry(fetch, 0.3, first_frames=1),
              DatasetEntry(wheeled, 0.5)]
    oversampled = [DatasetEntry(fetch, 1.0, oversample=[{"first_frames": 5, "weight": 0.4}, {"first_frames": 1, "weight": 0.3}]),
                   DatasetEntry(wheeled, 0.5)]
    a, b = (MixtureDataModule(d, num_workers=0, samples_per_epoch=500, val_episodes=1) for d in (listed, oversampled))
    a.setup("fit"), b.setup("fit")
    assert a.train_set.paths == b.train_set.paths == [fetch] * 3 + [wheeled]
    for x, y in [(a.train_set, b.train_set), (a.val_set, b.val_set)]:
        np.testing.assert_array_equal(x.offsets, y.offsets)
        for fx, fy in zip(x.frames, y.frames, strict=True):
            np.testing.assert_array_equal(fx, fy)
    np.testing.assert_array_equal(a.train_weights.numpy(), b.train_weights.numpy())
    np.testing.assert_array_equal(a.val_indices, b.val_indices)
    assert list(a.train_dataloader().sampler) == list(b.train_dataloader().sampler)
    with pytest.raises(ValueError, match=f"{fetch}: first_frames must be a positive number of frames, got 0"):
        DatasetEntry(fetch, oversample=[{"first_frames": 0, "weight": 1.0}])


def test_batches_mix_embodiments_with_their_own_masks(datamodule):
    ds = datamodule.train_set
    batch = datamodule.processor.collate([ds[int(o)] for o in ds.offsets[:-1]])
    specs = datamodule.processor.embodiments
    for i, name in enumerate(batch["embodiment"]):
        assert (batch["dim_mask"][i].numpy() == specs[name].action_mask).all()
        assert batch["time_mask"][i].sum() == min(specs[name].chunk_horizon, 12)  # episodes have 12 frames
    assert batch["input_ids"].shape[1] % 32 == 0


def test_out_of_range_training_data_names_embodiment_slot_and_file(tmp_path):
    spec = Embodiments.from_config_dir(["fetch"])["fetch"]
    path = tmp_path / "bad_fetch.zarr"
    store = EpisodeStore.create(path, embodiment="fetch", fps=25, cameras=spec.camera_names)
    action = np.zeros((5, 4), np.float32)
    action[2, 1] = 3.0  # dy is declared in [-1, 1]
    store.append_episode({"action": action, "state": np.full((5, 4), 0.6, np.float32),
                          "images": {c.name: np.zeros((5, c.height, c.width, 3), np.uint8) for c in spec.cameras}},
                         "reach")
    dm = MixtureDataModule([DatasetEntry(str(path))], num_workers=0)
    with pytest.raises(EmbodimentError, match=rf"{path}: 'action' value 3 in slot 'dy' is outside the range "
                                              rf"\[-1, 1\] declared by embodiment 'fetch'"):
        dm.setup("fit")
    assert spec.action_dim == 4


def test_store_of_unknown_embodiment_is_refused(tmp_path):
    path = tmp_path / "spot.zarr"
    store = EpisodeStore.create(path, embodiment="spot", fps=10, cameras=["front"])
    store.append_episode({"action": np.zeros((2, 3), np.float32), "state": np.zeros((2, 3), np.float32),
                          "images": {"front": np.zeros((2, 8, 8, 3), np.uint8)}}, "walk")
    with pytest.raises(EmbodimentError, match=r"unknown embodiment\(s\) \['spot'\]"):
        MixtureDataModule([DatasetEntry(str(path))], num_workers=0).setup("fit")


def test_stats_command_writes_per_embodiment_and_per_dataset_stats(synthetic_stores, tmp_path):
    from stack.commands import stats
    out = stats([synthetic_stores["fetch"], synthetic_stores["aloha"]], str(tmp_path / "norm_stats.json"))
    loaded = load_stats(out)
    assert {"fetch", "aloha", f"dataset:{synthetic_stores['fetch']}"} <= set(loaded)
    fetch = loaded["fetch"]["action"]
    assert fetch.mask.sum() == 4 and (fetch.q99[fetch.mask] > fetch.q01[fetch.mask]).all()
    assert not loaded["aloha"]["action"].mask[14:].any()


def test_damaged_episodes_are_an_error_unless_skipped_with_a_warning(tmp_path):
    from components.errors import StoreError
    from components.synthetic import make_synthetic_store
    path = tmp_path / "fetch.zarr"
    make_synthetic_store(path, Embodiments.from_config_dir(["fetch"])["fetch"], episodes=3, steps=50, seed=0)
    chunk = path / "data/images/front/c/1/0/0/0"  # frames 100..149: episode 2
    chunk.write_bytes(chunk.read_bytes()[:40])

    strict = MixtureDataModule([DatasetEntry(str(path))], num_workers=0)
    strict.setup("fit")
    with pytest.raises(StoreError, match=r"data/images/front frames 100\.\.149 \(episode\(s\) \[2\]\)"):
        strict.train_set[120]
    with pytest.warns(UserWarning, match=r"skipping damaged episode 2: .*frames 100\.\.149"):
        skipping = MixtureDataModule([DatasetEntry(str(path))], num_workers=0, skip_damaged_episodes=True)
        skipping.setup("fit")
    np.testing.assert_array_equal(skipping.train_set.frames[0], np.arange(100))
    assert skipping.train_set[99]["embodiment"] == "fetch"
    intact = tmp_path / "first_two.zarr"  # the same seed writes the same first two episodes
    make_synthetic_store(intact, Embodiments.from_config_dir(["fetch"])["fetch"], episodes=2, steps=50, seed=0)
    alone = MixtureDataModule([DatasetEntry(str(intact))], num_workers=0)
    alone.setup("fit")
    for key in ("action", "state"):
        np.testing.assert_array_equal(skipping.processor.norm_stats["fetch"][key].q99,
                                      alone.processor.norm_stats["fetch"][key].q99)
