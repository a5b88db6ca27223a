"""The learned progress scorer: its value label, that the head can learn from pixels, `vla-stack fit` on
recorded rollouts (a real Fetch push store with dense rewards), the exported directory round trip, and
`--scorer progress` ranking imagined candidates in `vla-stack run`."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from world_model.base import Imagination
from world_model.progress import ProgressHead, ProgressScorer, pack_words, returns, word_ids

REPO = Path(__file__).resolve().parents[2]


def test_returns_discounts_within_each_episode_and_holds_the_last_reward():
    reward = np.array([0.0, 1.0, 2.0, 5.0, 5.0], np.float32)
    got = returns(reward, np.array([3, 5]), gamma=0.5)
    # episode 0: tail 2 held; v2 = 0.5*2 + 0.5*2 = 2, v1 = 0.5*1 + 0.5*2 = 1.5, v0 = 0 + 0.5*1.5 = 0.75
    np.testing.assert_allclose(got[:3], [0.75, 1.5, 2.0])
    np.testing.assert_allclose(got[3:], [5.0, 5.0])  # episode 1 does not see episode 0
    assert returns(reward, np.array([5]), gamma=0.0).tolist() == reward.tolist()


def test_word_ids_are_stable_and_case_insensitive():
    assert word_ids("Push the block.", 512) == word_ids("push the block", 512)
    assert len(set(word_ids("push the block to the target", 512))) >= 4


def test_head_learns_where_a_square_is():
    """The value is the square's horizontal position: the head must read position, not just colour."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    def batch(n):
        frames = np.zeros((n, 24, 64, 3), np.uint8)
        x = rng.integers(0, 56, n)
        for i in range(n):
            frames[i, 8:16, x[i]:x[i] + 8] = 255
        return torch.as_tensor(frames), torch.as_tensor(x / 56.0, dtype=torch.float32)

    head = ProgressHead(height=24, width=64, channels=(16, 32), dim=64, word_buckets=16)
    words, offsets = pack_words(["find it"] * 64, 16)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    test_frames, test_x = batch(64)
    index = torch.zeros(64, dtype=torch.long)
    with torch.no_grad():
        before = float(((head(test_frames, words, offsets, index) - test_x) ** 2).mean())
    for _ in range(150):
        frames, x = batch(64)
        loss = ((head(frames, words, offsets, index) - x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(((head(test_frames, words, offsets, index) - test_x) ** 2).mean())
    assert after < 0.1 * max(before, float(test_x.var())), (before, after)


@pytest.fixture(scope="module")
def dense_store(tiny_checkpoint, tmp_path_factory) -> str:
    from stack.runner import run
    path = tmp_path_factory.mktemp("progress") / "push_dense.zarr"
    run(env="vla_stack/FetchPush-v0", policy=tiny_checkpoint, episodes=3, seed=0, max_steps=8,
        env_kwargs={"reward_type": "dense"}, record=str(path))
    return str(path)


@pytest.fixture(scope="module")
def trained(dense_store, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fit_progress")
    args = ["fit", "--config", str(REPO / "configs/train/progress_tiny.yaml"),
            f"--data.init_args.datasets=[{dense_store}]", "--data.init_args.num_workers=0",
            "--data.init_args.batch_size=4", "--data.init_args.val_episodes=1", "--trainer.max_steps=4",
            "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1", "--trainer.log_every_n_steps=1",
            "--trainer.enable_progress_bar=false", "--model.init_args.head={height: 24, width: 64, channels: [8, 16]}"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "stack.cli", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(root / "runs/progress/logs/version_0/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["train/loss"]) for r in rows if r.get("train/loss")], rows
    assert any(r.get("val/mae") for r in rows)
    return root / "runs/progress/scorer"


def test_fit_exports_a_scorer_that_loads_and_scores(trained, dense_store):
    from components.embodiment import Embodiments
    from components.episode_store import EpisodeStore
    spec = Embodiments.from_config_dir()["fetch"]
    scorer = ProgressScorer.from_pretrained(str(trained), spec)
    assert scorer.meta["embodiments"] == {"fetch": {"index": 0, "cameras": ["front", "side"]}}
    store = EpisodeStore.open(dense_store)
    labels = returns(store.lowdim("reward"), store.episode_ends, scorer.meta["gamma"])
    train = labels[:store.episode_ends[-2]]
    assert scorer.head.config.label_mean == pytest.approx(float(train.mean()), rel=1e-5)
    ep = store.get_episode(0)
    frames = np.concatenate([ep["images"]["front"], ep["images"]["side"]], axis=2)[:3]  # side by side
    imagination = Imagination(latents=np.zeros((3, 1, 2)), frames=frames[:, None], steps=[10])
    scores = scorer.score(imagination, store.instructions[0], spec, np.random.default_rng(0))
    again = ProgressScorer.from_pretrained(str(trained)).values(frames, store.instructions[0], spec)
    assert scores.shape == (3,) and np.isfinite(scores).all()
    np.testing.assert_allclose(scores, again)  # the directory round-trips
    words, offsets = pack_words([store.instructions[0]] * 3, scorer.head.config.word_buckets)
    direct = scorer.head.value(torch.as_tensor(frames), words, offsets, torch.zeros(3, dtype=torch.long))
    np.testing.assert_allclose(scores, direct.detach().double().numpy(), rtol=1e-6)
    with pytest.raises(Exception, match=r"trained for embodiment\(s\) \['fetch'\], not 'aloha'"):
        scorer.check_compatible(Embodiments.from_config_dir()["aloha"])


def test_run_ranks_oracle_futures_with_the_progress_scorer(trained, tiny_checkpoint, tmp_path):
    from stack.runner import run
    result = run(env="vla_stack/FetchPush-v0", policy=tiny_checkpoint, episodes=1, seed=0, max_steps=10,
                 candidates=3, world_model="oracle", scorer="progress", scorer_model=str(trained),
                 json=str(tmp_path / "r.json"))
    decisions = result["per_episode"][0]["decisions"]
    assert result["scorer"] == "progress" and decisions
    assert all(len(d["scores"]) == 3 and d["choice"] == int(np.argmax(d["scores"])) for d in decisions)


def test_imagined_frames_train_the_head_on_what_the_world_model_imagines(tiny_checkpoint, tmp_path, monkeypatch):
    """data.imagined_by: each window adds the world model's last imagined frame, labelled with the real value."""
    from components.embodiment import Embodiments
    from components.episode_store import EpisodeStore
    from stack.runner import run
    from world_model.learned import load_world_model
    from world_model.pipeline import WorldModelMeta, build_pipeline
    from world_model.progress import ProgressDataModule
    spec = Embodiments.from_config_dir(["fetch"])["fetch"]
    store_path = str(tmp_path / "push.zarr")
    run(env="vla_stack/FetchPush-v0", policy=tiny_checkpoint, episodes=2, seed=0, max_steps=14,
        env_kwargs={"reward_type": "dense"}, record=store_path)
    meta = WorldModelMeta(cameras=spec.camera_names, frame_height=16, frame_width=16, context_frames=2, num_frames=2,
                          execute_steps=4, embodiments={"fetch": WorldModelMeta.embodiment_entry(spec, 0)},
                          num_inference_steps=2)
    torch.manual_seed(0)
    build_pipeline(meta, "dit", vae={"block_out_channels": (8, 16, 16)},
                   transformer={"dim": 32, "depth": 1, "heads": 2}).save_pretrained(tmp_path / "wm")
    data = ProgressDataModule([store_path], val_episodes=1, imagined_by=str(tmp_path / "wm"), num_workers=0,
                              imagined_cache=str(tmp_path / "cache"))
    data.prepare()
    cached = list((tmp_path / "cache").glob("*.npy"))
    assert len(cached) == 1 and np.array_equal(np.load(cached[0]), data.imagined[0])
    with monkeypatch.context() as patch:  # a second fit reads the cache: imagining again would fail
        patch.setattr("world_model.progress.imagined_last_frames", None)
        again = ProgressDataModule([store_path], val_episodes=1, imagined_by=str(tmp_path / "wm"), num_workers=0,
                                   imagined_cache=str(tmp_path / "cache"))
        again.prepare()
    assert np.array_equal(again.imagined[0], data.imagined[0]) and again.train_items == data.train_items
    store = EpisodeStore.open(store_path)
    imagined = [it for it in data.train_items + data.val_items if len(it) == 3]
    n_windows = sum(int(e - s) - 4 for s, e in zip([0, *store.episode_ends[:-1]], store.episode_ends))
    assert len(imagined) == n_windows == len(data.imagined[0]) and data.imagined[0].shape[1:] == (16, 32, 3)
    assert len(data.train_items) + len(data.val_items) == store.n_frames + n_windows  # real frames are kept
    cut = store.episode_ends[0]  # the last episode is held out, imagined frames included
    assert all(it[1] < cut for it in data.train_items) and all(it[1] >= cut for it in data.val_items)
    data.setup()
    j, t, i = imagined[0]
    item = data.train_set[data.train_set.items.index(imagined[0])]
    assert item["label"] == pytest.approx(float(data.labels[0][t]))
    start = t - 4  # the window's start: its context is frames start-1, start; its chunk the one executed from start
    frames = [store.get_frame(max(0, r), [f"images/{c}" for c in spec.camera_names]) for r in (start - 1, start)]
    chunk, _ = store.get_window(start, spec.chunk_horizon)
    expected = load_world_model(tmp_path / "wm").imagine(frames, chunk[None], spec, 4, seed=0).frames[0, -1]
    diff = np.abs(item["frame"].numpy().astype(int) - expected.astype(int))
    assert diff.mean() < 1.0, diff.mean()  # the same imagination, up to the float16 latent cache
    real = data.train_set[data.train_set.items.index((0, t))]["frame"]  # at the imagined size: one batch, one size
    assert real.shape == item["frame"].shape and real.dtype == torch.uint8
    batch = next(iter(data.train_dataloader()))
    assert batch["frames"].shape[1:] == (16, 32, 3)


def test_eval_world_model_reports_the_scorers_value_error_on_imagined_frames(tiny_checkpoint, tmp_path):
    """prediction_errors(scorer=...): the head's value of the real, imagined and copy-last frames against the label."""
    from components.embodiment import Embodiments
    from components.episode_store import EpisodeStore
    from stack.runner import run
    from world_model.evaluate import prediction_errors
    from world_model.learned import LearnedWorldModel
    from world_model.pipeline import WorldModelMeta, build_pipeline, pixels_to_uint8
    from world_model.training import window, window_starts
    spec = Embodiments.from_config_dir(["fetch"])["fetch"]
    store_path = str(tmp_path / "push.zarr")
    run(env="vla_stack/FetchPush-v0", policy=tiny_checkpoint, episodes=1, seed=0, max_steps=12,
        env_kwargs={"reward_type": "dense"}, record=store_path)
    store = EpisodeStore.open(store_path)
    meta = WorldModelMeta(cameras=spec.camera_names, frame_height=16, frame_width=16, context_frames=2, num_frames=2,
                          execute_steps=4, embodiments={"fetch": WorldModelMeta.embodiment_entry(spec, 0)})
    torch.manual_seed(0)
    model = LearnedWorldModel(build_pipeline(meta, "dit", vae={"block_out_channels": (8, 16, 16)},
                                             transformer={"dim": 32, "depth": 1, "heads": 2}))
    head = ProgressHead(height=16, width=32, channels=(8, 16), label_mean=-0.1, label_std=0.05)
    scorer = ProgressScorer(head, {"embodiments": {"fetch": {"index": 0, "cameras": spec.camera_names}}}, "tiny")
    result = prediction_errors(model, store, spec, [0], stride=1, scorer=scorer, gamma=0.9)
    value = result["scorer_value"]
    assert set(value) == {"imagined", "real", "copy_last"} and all(np.isfinite(v["mae"]) for v in value.values())
    labels = returns(store.lowdim("reward"), store.episode_ends, 0.9)
    starts = window_starts(store, [0], 4)
    real = torch.stack([window(store, int(t), meta, spec)["pixels"][-1] for t in starts])
    expected = np.abs(scorer.values(pixels_to_uint8(real), store.instructions[0], spec) - labels[starts + 4]).mean()
    assert value["real"]["mae"] == pytest.approx(expected, abs=1e-5)
    assert value["imagined"]["mae"] != value["real"]["mae"]
