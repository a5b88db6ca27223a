"""Training the decoder's motion history (components/odometry.py) on rendered `video` stores, alone: every
other weight of the generalist stays as loaded, so the robots' actions do not change.

    vla-stack fit --config configs/train/video_motion_tiny.yaml      (resume: --ckpt_path last)

The clips are built in memory from the stores' `front` frames (resized once to the model's size): clip i
is the frames ``i - k * stride`` (k = pairs .. 0) of i's episode, those before the episode's start marked
invalid, with the true relative pose of each neighbouring pair and the true future waypoints.
"""
from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from components.errors import ConfigError
from components.kinematics import to_robot_frame, xz_to_xy
from components.odometry import clip_steps
from components.training import ExportsOnCheckpoint, load_weights
from components.vla import VLA, load_model_config

CAMERA = "front"


def relative_poses(poses_xy: np.ndarray, older: np.ndarray) -> np.ndarray:
    """``[N, 3]``: the pose of frame ``older[i]`` in the ground frame of frame i (x_forward, y_left, yaw)."""
    out = np.zeros((len(poses_xy), 3), np.float32)
    for i, j in enumerate(older):
        out[i, :2] = to_robot_frame(poses_xy[j][None, :2], poses_xy[i], frame="xy")[0]
    out[:, 2] = (poses_xy[older, 2] - poses_xy[:, 2] + math.pi) % (2 * math.pi) - math.pi
    return out


class Clips(Dataset):
    """Motion-history clips of frames ``index`` of the in-memory stores."""

    def __init__(self, data: dict, index: np.ndarray, pairs: int, stride: int):
        self.d, self.index, self.pairs, self.stride = data, index, pairs, stride

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> dict:
        d, i = self.d, int(self.index[k])
        back = clip_steps(self.pairs, self.stride)
        valid = d["t"][i] - back >= 0
        rows = np.maximum(i - back, d["start"][i])
        return {"clip": torch.from_numpy(d["frames"][rows]), "valid": torch.from_numpy(valid),
                "pairs": torch.from_numpy(d["rel"][rows[1:]]), "waypoints": torch.from_numpy(d["waypoints"][i])}


class MotionHistoryDataModule(L.LightningDataModule):
    """``datasets``: `video` episode stores (``vla-stack render-video``); their last ``val_episodes`` episodes
    are held out. ``base`` / ``share_stats``: as ``MixtureDataModule``'s (the exported checkpoint is the base's
    embodiments and statistics plus `video`). ``pairs``, ``stride``, ``size``: the clip geometry, which must be
    the model's (``decoder.motion_history*``; checked when fitting starts)."""

    def __init__(self, datasets: list[str], base: str, share_stats: dict[str, str] | None = None,
                 model: str = "tiny", pairs: int = 20, stride: int = 2, size: tuple[int, int] = (45, 80),
                 batch_size: int = 32, num_workers: int = 0, samples_per_epoch: int = 100000,
                 val_episodes: int = 20, val_samples: int = 512, seed: int = 0):
        super().__init__()
        if not datasets:
            raise ConfigError("data.datasets is empty: give at least one video episode store (vla-stack render-video)")
        self.datasets, self.base, self.share_stats, self.model = list(datasets), base, share_stats, model
        self.pairs, self.stride, self.size = pairs, stride, tuple(size)
        self.batch_size, self.num_workers, self.samples_per_epoch = batch_size, num_workers, samples_per_epoch
        self.val_episodes, self.val_samples, self.seed = val_episodes, val_samples, seed
        self.processor = None

    def setup(self, stage: str | None = None) -> None:
        if self.processor is not None:
            return
        from tqdm import tqdm

        from components.datamodule import MixtureDataModule
        from components.episode_store import EpisodeStore
        from components.processor import resize_image

        mix = MixtureDataModule([{"path": p, "weight": 1.0} for p in self.datasets], model=self.model,
                                base=self.base, share_stats=self.share_stats, num_workers=0)
        mix.setup()
        self.processor = mix.processor
        parts, train, val, offset = [], [], [], 0
        for path in self.datasets:
            store = EpisodeStore.open(path)
            if f"images/{CAMERA}" not in store.keys:
                raise ConfigError(f"data.datasets: {path} has no camera {CAMERA!r} (keys {store.keys}); expected a "
                                  f"video store written by vla-stack render-video")
            n, ends = store.n_frames, store.episode_ends
            frames = np.zeros((n, 3, *self.size), np.uint8)
            for a in tqdm(range(0, n, 2000), desc=f"loading {path}", leave=False):
                rows = store.get_rows(slice(a, min(a + 2000, n)), [f"images/{CAMERA}"])["images"][CAMERA]
                frames[a:a + len(rows)] = np.stack([resize_image(np.asarray(f), *self.size) for f in rows]).transpose(0, 3, 1, 2)
            starts = np.repeat(np.r_[0, ends[:-1]], np.diff(np.r_[0, ends]))
            t = np.arange(n) - starts
            poses = xz_to_xy(store.lowdim("pose"))
            older = np.maximum(np.arange(n) - self.stride, starts)
            parts.append({"frames": frames, "start": starts + offset, "t": t, "rel": relative_poses(poses, older),
                          "waypoints": store.lowdim("action")[:, :, :4].astype(np.float32)})
            n_val = min(self.val_episodes, store.n_episodes - 1)
            cut = int(ends[store.n_episodes - n_val - 1])
            train.append(np.arange(cut) + offset)
            val.append(np.arange(cut, n) + offset)
            offset += n
        data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        train_idx, val_idx = np.concatenate(train), np.concatenate(val)
        rng = np.random.default_rng(self.seed)
        val_idx = rng.choice(val_idx, size=min(self.val_samples, len(val_idx)), replace=False) if len(val_idx) else train_idx[:self.val_samples]
        #: typical size of one pair's motion (the model's pair_scale)
        self.pair_scale = torch.from_numpy(data["rel"][train_idx].std(axis=0) + 1e-3)
        self.train_set = Clips(data, train_idx, self.pairs, self.stride)
        self.val_set = Clips(data, np.sort(val_idx), self.pairs, self.stride)

    def train_dataloader(self) -> DataLoader:
        sampler = RandomSampler(self.train_set, replacement=True, num_samples=self.samples_per_epoch,
                                generator=torch.Generator().manual_seed(self.seed))
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=64, num_workers=self.num_workers)


def augment(batch: dict, generator: torch.Generator | None = None) -> dict:
    """Per clip: a random gain and offset per colour channel, and a left-right mirror of half the clips
    (mirroring negates y_left and yaw)."""
    clip = batch["clip"].float()
    b = len(clip)
    gain = torch.empty(b, 1, 3, 1, 1).uniform_(0.6, 1.4, generator=generator)
    shift = torch.empty(b, 1, 3, 1, 1).uniform_(-30.0, 30.0, generator=generator)
    clip = (clip * gain + shift).clamp(0, 255)
    flip = torch.rand(b, generator=generator) < 0.5
    clip[flip] = clip[flip].flip(-1)
    sign = torch.ones(b, 1, 1)
    sign[flip] = -1.0
    pairs, wp = batch["pairs"].clone(), batch["waypoints"].clone()
    pairs[..., 1:] *= sign
    wp[..., 1] *= sign[..., 0]
    wp[..., 3] *= sign[..., 0]
    return {**batch, "clip": clip.round().to(torch.uint8), "pairs": pairs, "waypoints": wp}


class MotionHistoryModule(ExportsOnCheckpoint, L.LightningModule):
    """Trains ``decoder.motion_history`` of the checkpoint ``init_from`` (every other weight as loaded).
    ``overrides`` give the model config the motion history (``{decoder: {motion_history: 20, ...}}``); the
    loss is the mean waypoint distance (metres) + ``heading_weight`` x the heading's (cos, sin) distance
    + ``odometry_weight`` x the normalized squared error of each pair's estimated motion."""
    exported = "policy checkpoint directory"

    def __init__(self, init_from: str, model: str = "tiny", overrides: dict | None = None, lr: float = 2e-3,
                 weight_decay: float = 1e-4, warmup_steps: int = 100, heading_weight: float = 0.5,
                 odometry_weight: float = 1.0, export_dir: str | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.vla = VLA(load_model_config(model, overrides))
        cfg = self.vla.config.decoder
        if not cfg.motion_history:
            raise ConfigError("model.overrides: the decoder has no motion history; set "
                              "{decoder: {motion_history: 20}} (the frame pairs it reads)")
        load_weights(self.vla, init_from)
        for name, p in self.vla.named_parameters():
            p.requires_grad_(name.startswith("decoder.motion_history."))
        self.processor = None

    @property
    def net(self):
        return self.vla.decoder.motion_history

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not isinstance(dm, MotionHistoryDataModule):
            raise ConfigError("the motion history trains on data.class_path: components.motion_training.MotionHistoryDataModule")
        cfg = self.vla.config.decoder
        want = (cfg.motion_history, cfg.motion_history_stride, tuple(cfg.motion_history_size))
        have = (dm.pairs, dm.stride, tuple(dm.size))
        if want != have:
            raise ConfigError(f"data (pairs, stride, size) = {have} but the model's decoder.motion_history, "
                              f"motion_history_stride, motion_history_size = {want}; make them the same")
        self.processor = dm.processor
        if stage == "fit" and self.trainer.ckpt_path is None:
            self.net.pair_scale.copy_(dm.pair_scale)

    def losses(self, batch: dict) -> dict:
        wp, odo = self.net(batch["clip"], batch["valid"])
        true = batch["waypoints"]
        pair_valid = batch["valid"][:, :-1].to(odo.dtype)
        odo_err = ((odo - batch["pairs"] / self.net.pair_scale) ** 2).mean(-1)
        return {"ade": (wp[..., :2] - true[..., :2]).norm(dim=-1).mean(),
                "fde": (wp[:, -1, :2] - true[:, -1, :2]).norm(dim=-1).mean(),
                "heading": (wp[..., 2:] - true[..., 2:]).norm(dim=-1).mean(),
                "odometry": (odo_err * pair_valid).sum() / pair_valid.sum().clamp(min=1.0)}

    def training_step(self, batch, batch_idx):
        terms = self.losses(augment(batch))
        hp = self.hparams
        loss = terms["ade"] + hp.heading_weight * terms["heading"] + hp.odometry_weight * terms["odometry"]
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["clip"]))
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, batch_size=len(batch["clip"]))
        return loss

    def validation_step(self, batch, batch_idx):
        terms = self.losses(batch)
        self.log_dict({f"val/{k}": v for k, v in terms.items()}, prog_bar=False, batch_size=len(batch["clip"]))
        self.log("val/ade_m", terms["ade"], prog_bar=True, batch_size=len(batch["clip"]))

    def _export(self):
        if self.hparams.export_dir and self.processor is not None and self.trainer.is_global_zero:
            from components.training import export_pretrained
            return export_pretrained(self.vla, self.processor, self.hparams.export_dir)
        return None
