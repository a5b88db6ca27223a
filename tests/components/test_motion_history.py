"""The decoder's motion history (components/odometry.py): the chained pose history, the training clips and
their targets from a rendered store, the mirror augmentation, `fit` training it alone (every other weight
as loaded), and predict-trajectory streaming it."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from components.errors import ConfigError
from components.motion_training import MotionHistoryDataModule, MotionHistoryModule, augment
from components.odometry import MotionHistory, compose
from components.policy import Policy
from components.trajectory import TrajectoryPredictor
from stack.cli import main
from stack.render_video import render_video
from stack.trajectory import predict_trajectory

PAIRS, STRIDE = 3, 2
OVERRIDES = {"decoder": {"motion_history": PAIRS, "motion_history_stride": STRIDE}}


def unicycle(t: np.ndarray, v: float, w: float) -> np.ndarray:
    """Poses [N, 3] (x, y, yaw) of a unicycle from the origin at speed v, yaw rate w."""
    return np.stack([v * np.sin(w * t) / w, v * (1 - np.cos(w * t)) / w, w * t], axis=1)


def in_frame(pose: np.ndarray, of: np.ndarray) -> np.ndarray:
    """``pose`` (x, y, yaw) in the frame of ``of``."""
    d, c, s = pose[:2] - of[:2], math.cos(of[2]), math.sin(of[2])
    return np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1], pose[2] - of[2]])


def test_chained_history_is_the_true_past_pose_on_a_circle():
    net = MotionHistory(pairs=20, size=(45, 80), channels=8, horizon=8)
    poses = unicycle(np.arange(21) * 0.2, v=0.6, w=0.7)  # frames 0.2 s apart, oldest first
    pairs = torch.tensor(np.stack([in_frame(poses[k], poses[k + 1]) for k in range(20)]), dtype=torch.float64)
    feats = net.history(pairs[None]).view(len(net.lags), 4).numpy()
    for row, lag in zip(feats, net.lags):
        want = in_frame(poses[20 - lag], poses[20])
        assert row == pytest.approx([want[0], want[1], math.cos(want[2]), math.sin(want[2])], abs=1e-9)
    # compose is the inverse of in_frame
    a, b = torch.tensor([0.3, -0.2, 0.5]), torch.tensor([1.0, 0.4, -0.1])
    back = in_frame(compose(a, b).numpy(), a.numpy())
    assert back == pytest.approx(b.numpy(), abs=1e-6)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    root = tmp_path_factory.mktemp("motion")
    render_video(str(root / "video.zarr"), episodes=2, seed=0, floorplans=["three_rooms"], episode_steps=12,
                 videos_dir=str(root / "videos"))
    return root


def make_data(rendered, base, **kw) -> MotionHistoryDataModule:
    dm = MotionHistoryDataModule([str(rendered / "video.zarr")], base=base, pairs=PAIRS, stride=STRIDE,
                                 batch_size=4, val_episodes=1, val_samples=8, **kw)
    dm.setup("fit")
    return dm


def test_clips_and_targets_come_from_the_store(rendered, tiny_checkpoint):
    from components.episode_store import EpisodeStore
    from components.kinematics import xz_to_xy
    from components.processor import resize_image
    dm = make_data(rendered, tiny_checkpoint)
    store = EpisodeStore.open(rendered / "video.zarr")
    poses = xz_to_xy(store.lowdim("pose"))
    # episode 0 trains; val_samples=8 of episode 1's frames are held out
    assert dm.train_set.index.tolist() == list(range(12))
    assert len(dm.val_set) == 8 and dm.val_set.index.min() >= 12
    for k in (0, 3, 11):
        item = dm.train_set[k]
        rows = [k - STRIDE * j for j in range(PAIRS, -1, -1)]
        assert item["valid"].tolist() == [r >= 0 for r in rows]
        for frame, r in zip(item["clip"], rows):
            want = resize_image(store.get_frame(max(r, 0), ["images/front"])["images"]["front"], 45, 80)
            assert np.array_equal(frame.numpy().transpose(1, 2, 0), want)
        for j in range(PAIRS):  # pair j: frame rows[j] in frame rows[j + 1], where both exist
            if rows[j] >= 0:
                want = in_frame(poses[rows[j]], poses[rows[j + 1]])
                want[2] = (want[2] + math.pi) % (2 * math.pi) - math.pi
                assert item["pairs"][j].numpy() == pytest.approx(want, abs=1e-5)
        assert np.array_equal(item["waypoints"].numpy(), store.lowdim("action")[k])


def test_mirroring_negates_left_and_yaw():
    clip = torch.randint(0, 256, (16, 2, 3, 6, 8), dtype=torch.uint8)
    batch = {"clip": clip, "valid": torch.ones(16, 2, dtype=torch.bool),
             "pairs": torch.randn(16, 1, 3), "waypoints": torch.randn(16, 8, 4)}
    out = augment(batch, torch.Generator().manual_seed(0))
    flipped = (out["pairs"][:, 0, 1] == -batch["pairs"][:, 0, 1])
    assert 0 < flipped.sum() < 16
    for i in range(16):
        sign = -1.0 if flipped[i] else 1.0
        assert torch.equal(out["pairs"][i, :, 0], batch["pairs"][i, :, 0])
        assert torch.equal(out["pairs"][i, :, 1:], sign * batch["pairs"][i, :, 1:])
        assert torch.equal(out["waypoints"][i, :, [0, 2]], batch["waypoints"][i, :, [0, 2]])
        assert torch.equal(out["waypoints"][i, :, [1, 3]], sign * batch["waypoints"][i, :, [1, 3]])
        # the image is mirrored (and recoloured): its left-right order follows the flag
        plain, mirrored = batch["clip"][i].float(), batch["clip"][i].float().flip(-1)
        right, wrong = (mirrored, plain) if flipped[i] else (plain, mirrored)
        got = out["clip"][i].float().flatten().numpy()
        assert np.corrcoef(right.flatten().numpy(), got)[0, 1] > 0.7 > 0.3 > np.corrcoef(wrong.flatten().numpy(), got)[0, 1]


def test_the_module_needs_a_motion_history_and_matching_data(rendered, tiny_checkpoint):
    with pytest.raises(ConfigError, match="no motion history"):
        MotionHistoryModule(tiny_checkpoint)
    module = MotionHistoryModule(tiny_checkpoint, overrides={"decoder": {"motion_history": PAIRS + 1}})
    module.trainer = type("T", (), {"datamodule": make_data(rendered, tiny_checkpoint), "ckpt_path": None})()
    with pytest.raises(ConfigError, match=r"\(pairs, stride, size\) = \(3, 2"):
        module.setup("fit")


def test_fit_trains_only_the_motion_history_and_predict_trajectory_streams_it(rendered, tiny_checkpoint, tmp_path):
    out = tmp_path / "pretrained"
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 3, "logger": False, "enable_checkpointing": False,
                    "enable_progress_bar": False, "limit_val_batches": 1, "default_root_dir": str(tmp_path)},
        "model": {"class_path": "components.motion_training.MotionHistoryModule",
                  "init_args": {"init_from": tiny_checkpoint, "overrides": OVERRIDES, "export_dir": str(out)}},
        "data": {"class_path": "components.motion_training.MotionHistoryDataModule",
                 "init_args": {"datasets": [str(rendered / "video.zarr")], "base": tiny_checkpoint, "pairs": PAIRS,
                               "stride": STRIDE, "batch_size": 4, "samples_per_epoch": 12, "val_episodes": 1}},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    main(["fit", "--config", str(tmp_path / "c.yaml")])
    before, after = load_file(f"{tiny_checkpoint}/model.safetensors"), load_file(f"{out}/model.safetensors")
    new = {k for k in after if k.startswith("decoder.motion_history.")}
    assert new and set(after) - new == set(before)
    assert all(torch.equal(before[k], after[k]) for k in before)  # the robots' weights are as loaded
    dm = make_data(rendered, tiny_checkpoint)
    assert torch.equal(after["decoder.motion_history.pair_scale"], dm.pair_scale)

    policy = Policy.from_pretrained(out)
    video = sorted((rendered / "videos").glob("*.mp4"))[0]
    result = predict_trajectory(str(video), str(out), str(tmp_path / "p.json"), batch_size=4)
    assert result["predicted_by"] == "motion history (4 frames 0.2 s apart)"
    assert json.loads((tmp_path / "p.json").read_text())["frames"][0]["waypoints"] == result["frames"][0]["waypoints"]
    one = predict_trajectory(str(video), str(out), str(tmp_path / "p1.json"), batch_size=1)
    assert np.allclose([f["waypoints"] for f in one["frames"]], [f["waypoints"] for f in result["frames"]], atol=1e-4)
    # frame 5's clip is the views of frames 1, 3, 5 with the one before the video marked invalid; the stream
    # (each pair's odometry computed once) gives what the whole clip gives in one call
    from components.video_io import decode_video
    views = [p.display for p in TrajectoryPredictor(policy).predict(decode_video(video), display_size=(90, 160))]
    clip, valid = np.stack([views[0], views[1], views[3], views[5]]), np.array([False, True, True, True])
    want = policy.motion_waypoints(clip[None], valid[None])[0]
    assert np.allclose(np.asarray(result["frames"][5]["waypoints"]), want, atol=1e-4)
    assert np.allclose(np.asarray(one["frames"][5]["waypoints"]), want, atol=1e-4)
