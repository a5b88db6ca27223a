"""The learned progress scorer (``--scorer progress --scorer_model DIR``; docs/ARCHITECTURE.md, "World model").

A small CNN reads one frame (the cameras side by side) plus the instruction and predicts the value of
that frame: the discounted return of the task's dense reward from there on (:func:`returns`). Ranking a
candidate by the value of its last imagined frame is best-of-K by "how well the task will go from where
this chunk leaves the robot". Trained with ``vla-stack fit --config configs/train/progress_tiny.yaml`` on
episode stores with a per-frame ``reward`` (``vla-stack run --record`` writes it; Fetch with
``--env_kwargs '{reward_type: dense}'``): the simulator's reward labels training data only, at test time
the head sees pixels and words.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from tqdm.auto import tqdm

from components.checkpoint_io import reading, replace_directory
from components.embodiment import EmbodimentSpec
from components.errors import CheckpointError, CheckpointNotFoundError, ConfigError, StoreError
from components.training import ExportsOnCheckpoint
from world_model.base import Imagination
from world_model.oracle import side_by_side
from world_model.pipeline import pixels_to_uint8

META_FILE = "progress.json"
RECOVER = "write it again with `vla-stack fit --config configs/train/progress_tiny.yaml` (model.export_dir)"


def returns(reward: np.ndarray, ends: np.ndarray, gamma: float) -> np.ndarray:
    """Per frame, ``(1 - gamma) * sum_k gamma^k reward[t + k]`` within its episode, the last reward held
    for ever after the end (so the value is in reward units and a finished episode keeps its outcome)."""
    out = np.zeros(len(reward), np.float64)
    start = 0
    for end in ends:
        acc = float(reward[end - 1])  # the tail: the last reward repeated
        for t in range(end - 1, start - 1, -1):
            acc = (1 - gamma) * float(reward[t]) + gamma * acc
            out[t] = acc
        start = end
    return out.astype(np.float32)


def word_ids(instruction: str, buckets: int) -> list[int]:
    """The instruction's lower-cased words hashed (crc32, stable across runs) into ``buckets`` ids."""
    words = instruction.lower().replace(",", " ").replace(".", " ").split() or ["<empty>"]
    return [zlib.crc32(w.encode()) % buckets for w in words]


class ProgressHead(ModelMixin, ConfigMixin):
    """Frames ``uint8 [B, H, W, 3]`` (any size; resized to ``height x width``) + word ids → value ``[B]``
    in reward units (the output is de-normalized by the label mean/std seen in training)."""

    @register_to_config
    def __init__(self, height: int = 96, width: int = 256, channels: tuple = (32, 64, 64, 64), dim: int = 128,
                 word_buckets: int = 512, num_embodiments: int = 8, label_mean: float = 0.0, label_std: float = 1.0):
        super().__init__()
        layers, c_in = [], 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(8, c), nn.SiLU()]
            c_in = c
        self.conv = nn.Sequential(*layers)
        h, w = height, width
        for _ in channels:
            h, w = (h + 1) // 2, (w + 1) // 2
        self.flat = nn.Linear(c_in * h * w, dim)
        self.words = nn.EmbeddingBag(word_buckets, dim, mode="mean")
        self.embodiment = nn.Embedding(num_embodiments, dim)
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, 1))

    def pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """``uint8 [B, H, W, 3]`` → float ``[B, 3, height, width]`` in [0, 1] (area resize)."""
        x = frames.permute(0, 3, 1, 2).float() / 255.0
        size = (self.config.height, self.config.width)
        return x if tuple(x.shape[-2:]) == size else F.interpolate(x, size=size, mode="area")

    def forward(self, frames: torch.Tensor, words: torch.Tensor, offsets: torch.Tensor,
                embodiment: torch.Tensor) -> torch.Tensor:
        """Normalized value ``[B]`` (multiply by label_std and add label_mean for reward units)."""
        x = self.conv(self.pixels(frames)).flatten(1)
        h = self.flat(x) + self.words(words, offsets) + self.embodiment(embodiment)
        return self.out(h).squeeze(-1)

    def value(self, frames: torch.Tensor, words: torch.Tensor, offsets: torch.Tensor,
              embodiment: torch.Tensor) -> torch.Tensor:
        return self(frames, words, offsets, embodiment) * self.config.label_std + self.config.label_mean


def pack_words(instructions: list[str], buckets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """EmbeddingBag inputs (flat ids, offsets) for a batch of instructions."""
    ids = [word_ids(s, buckets) for s in instructions]
    offsets = np.cumsum([0] + [len(i) for i in ids[:-1]])
    return torch.tensor([x for i in ids for x in i]), torch.as_tensor(offsets)


class ProgressScorer:
    """Scores each candidate by the head's value of its last imagined frame (``Imagination.frames``)."""
    name = "progress"

    def __init__(self, head: ProgressHead, meta: dict, directory: str):
        self.head, self.meta, self.directory = head.eval(), meta, directory

    @classmethod
    def from_pretrained(cls, directory: str, spec: EmbodimentSpec | None = None) -> "ProgressScorer":
        path = Path(directory)
        if not (path / META_FILE).is_file():
            raise CheckpointNotFoundError(f"--scorer_model: {directory} is not a progress-scorer directory (no "
                                          f"{META_FILE}); {RECOVER}")
        with reading(path / META_FILE, "the progress-scorer metadata"):
            meta = json.loads((path / META_FILE).read_text())
        with reading(path / "config.json", "the progress head"):
            head = ProgressHead.from_pretrained(str(path))
        scorer = cls(head, meta, directory)
        if spec is not None:
            scorer.check_compatible(spec)
        return scorer

    def check_compatible(self, spec: EmbodimentSpec) -> None:
        known = self.meta["embodiments"]
        if spec.name not in known:
            raise CheckpointError(f"--scorer_model {self.directory}: trained for embodiment(s) {sorted(known)}, "
                                  f"not '{spec.name}'")
        if known[spec.name]["cameras"] != spec.camera_names:
            raise CheckpointError(f"--scorer_model {self.directory}: cameras {known[spec.name]['cameras']} for "
                                  f"'{spec.name}', the policy's spec has {spec.camera_names}")

    @torch.no_grad()
    def values(self, frames: np.ndarray, instruction: str, spec: EmbodimentSpec) -> np.ndarray:
        frames = torch.as_tensor(np.ascontiguousarray(frames, dtype=np.uint8))
        words, offsets = pack_words([instruction] * len(frames), self.head.config.word_buckets)
        index = torch.full((len(frames),), int(self.meta["embodiments"][spec.name]["index"]))
        return self.head.value(frames, words, offsets, index).double().numpy()

    def score(self, imagination: Imagination, instruction: str, spec: EmbodimentSpec,
              rng: np.random.Generator) -> np.ndarray:
        if imagination.frames is None:
            raise StoreError("--scorer progress reads imagined frames; this world model imagines latents only")
        return self.values(np.asarray(imagination.frames)[:, -1], instruction, spec)


def scorer_from_args(world_model=None, spec=None, scorer_model=None, **_):
    """The ``--scorer progress`` factory (world_model.scorers registry)."""
    from components.errors import UsageError
    if scorer_model is None:
        raise UsageError("--scorer progress needs --scorer_model DIR (a trained progress head: "
                         "configs/train/progress_tiny.yaml)")
    return ProgressScorer.from_pretrained(scorer_model, spec)


# ------------------------------------------------------------------------------------------- training


@torch.no_grad()
def imagined_last_frames(world_model, store, spec: EmbodimentSpec, starts: np.ndarray, batch_size: int = 64,
                         seed: int = 0) -> np.ndarray:
    """uint8 ``[len(starts), H, W, 3]``: the last frame the learned ``world_model`` imagines for each window
    of ``store`` starting at ``starts`` (its context and the chunk really executed there), as ``imagine``
    makes them at test time (the checkpoint's sampling settings)."""
    from world_model.pipeline import frames_to_pixels
    from world_model.training import store_latents, window
    meta, pipe = world_model.meta, world_model.pipeline
    latents = store_latents(store, meta, pipe.vae)
    keys = [f"images/{c}" for c in meta.cameras]
    generator = torch.Generator().manual_seed(seed)
    out = []
    for lo in tqdm(range(0, len(starts), batch_size), desc=f"imagining {Path(store.path).name}", unit="batch"):
        ts = [int(t) for t in starts[lo:lo + batch_size]]
        samples = [window(store, t, meta, spec, latents, "latents") for t in ts]
        batch = {k: torch.stack([x[k] for x in samples]) for k in samples[0]}
        rows = store.get_rows(slice(ts[0], ts[-1] + 1), keys)["images"]
        last = frames_to_pixels({c: rows[c][np.array(ts) - ts[0]] for c in meta.cameras}, meta)
        _, pixels = pipe(batch["latents"][:, :meta.context_frames], batch["actions"], batch["time_mask"],
                         batch["dim_mask"], batch["embodiment"], generator=generator, last_pixels=last)
        out.append(pixels_to_uint8(pixels[:, -1]))
    return np.concatenate(out) if out else np.zeros((0, meta.frame_height, meta.frame_width * len(meta.cameras), 3),
                                                      np.uint8)


class FrameValues(Dataset):
    """Frames of episode stores (cameras side by side), their word ids, embodiment index and value label.
    An item ``(j, t)`` is frame t of store j; ``(j, t, i)`` is row i of ``imagined[j]``, the frame imagined
    at frame t (label: the real value at t)."""

    def __init__(self, items: list[tuple], paths: list[str], labels: list[np.ndarray],
                 embodiment_index: list[int], cameras: list[list[str]], imagined: list[np.ndarray] | None = None):
        self.items, self.paths, self.labels = items, paths, labels
        self.embodiment_index, self.cameras = embodiment_index, cameras
        self.imagined = imagined
        self._stores = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        from components.episode_store import EpisodeStore
        j, t = self.items[i][:2]
        if j not in self._stores:
            self._stores[j] = EpisodeStore.open(self.paths[j])
        store = self._stores[j]
        if len(self.items[i]) == 3:
            frame = torch.as_tensor(self.imagined[j][self.items[i][2]])
        else:
            frame = torch.as_tensor(side_by_side(store.get_frame(t, [f"images/{c}" for c in self.cameras[j]])["images"],
                                                 self.cameras[j]))
            if self.imagined is not None and frame.shape != self.imagined[j].shape[1:]:  # one batch, one size
                x = F.interpolate(frame.permute(2, 0, 1)[None].float(), size=self.imagined[j].shape[1:3], mode="area")
                frame = x[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
        return {"frame": frame,
                "instruction": store.instructions[store.episode_of(t)],
                "embodiment": self.embodiment_index[j], "label": float(self.labels[j][t])}


def _collate(batch: list[dict], buckets: int) -> dict:
    words, offsets = pack_words([b["instruction"] for b in batch], buckets)
    return {"frames": torch.stack([b["frame"] for b in batch]), "words": words, "offsets": offsets,
            "embodiment": torch.tensor([b["embodiment"] for b in batch]),
            "label": torch.tensor([b["label"] for b in batch], dtype=torch.float32)}


class ProgressDataModule(L.LightningDataModule):
    """Frames of stores with a per-frame ``reward``; the last ``val_episodes`` of each store are held out.
    ``gamma``: the discount of the value label (:func:`returns`). ``imagined_by``: a learned world-model
    pipeline directory; each window of the stores (every ``imagine_stride``-th start) also gives the last
    frame that model imagines for the chunk really executed there, labelled with the real value at that
    frame, so the head learns to read imagined frames as ``--scorer progress`` sees them at test time.
    ``real_frames: false`` trains on the imagined frames only. ``imagined_cache``: a directory where the
    imagined frames are kept per (world model, store, stride, seed), so a resumed or repeated fit does not
    imagine them again."""

    def __init__(self, datasets: list[str], gamma: float = 0.9, batch_size: int = 64, num_workers: int = 1,
                 samples_per_epoch: int = 8192, val_episodes: int = 10, seed: int = 0, word_buckets: int = 512,
                 imagined_by: str | None = None, imagine_stride: int = 1, real_frames: bool = True,
                 imagined_cache: str | None = None):
        super().__init__()
        if imagine_stride < 1:
            raise ConfigError(f"data.imagine_stride must be >= 1, got {imagine_stride}")
        if not real_frames and not imagined_by:
            raise ConfigError("data.real_frames: false leaves nothing to train on without data.imagined_by")
        self.imagined_by, self.imagine_stride, self.real_frames = imagined_by, imagine_stride, real_frames
        self.imagined_cache = imagined_cache
        if not datasets:
            raise ConfigError("data.datasets is empty: give at least one episode store with a per-frame reward")
        if not 0.0 <= gamma < 1.0:
            raise ConfigError(f"data.gamma must be in [0, 1), got {gamma}")
        self.paths = [str(d) for d in datasets]
        self.gamma, self.batch_size, self.num_workers = gamma, batch_size, num_workers
        self.samples_per_epoch, self.val_episodes, self.seed = samples_per_epoch, val_episodes, seed
        self.word_buckets = word_buckets
        self.embodiments: dict[str, dict] | None = None

    def prepare(self) -> None:
        """Open the stores, check each has ``reward``, compute the labels; sets :attr:`embodiments`."""
        if self.embodiments is not None:
            return
        from components.datamodule import open_checked_stores
        stores, specs = open_checked_stores(self.paths)
        names = sorted({s.embodiment for s in stores})
        self.embodiments = {n: {"index": i, "cameras": specs[n].camera_names} for i, n in enumerate(names)}
        self.labels, self.train_items, self.val_items = [], [], []
        for j, store in enumerate(stores):
            if "reward" not in store.keys:
                raise ConfigError(f"data.datasets: {store.path} has no per-frame 'reward' (its arrays: {store.keys}); "
                                  f"record rollouts with `vla-stack run --record STORE.zarr` (Fetch: --env_kwargs "
                                  f"'{{reward_type: dense}}')")
            self.labels.append(returns(store.lowdim("reward"), store.episode_ends, self.gamma))
            cut = self._held_out_from(store)
            if self.real_frames:
                self.train_items += [(j, t) for t in range(cut)]
                self.val_items += [(j, t) for t in range(cut, store.n_frames)]
        self.imagined = self._imagine(stores, specs) if self.imagined_by else None
        self._index = [self.embodiments[s.embodiment]["index"] for s in stores]
        self._cameras = [specs[s.embodiment].camera_names for s in stores]
        train_labels = np.concatenate([self.labels[j][[it[1] for it in self.train_items if it[0] == j]]
                                       for j in range(len(stores))])
        self.label_mean, self.label_std = float(train_labels.mean()), float(train_labels.std() + 1e-6)

    def _held_out_from(self, store) -> int:
        """The first frame of ``store``'s held-out episodes (its last ``val_episodes``, at least one kept)."""
        held = min(self.val_episodes, store.n_episodes - 1)
        return int(store.episode_ends[store.n_episodes - held - 1])

    def _imagine(self, stores, specs) -> list[np.ndarray]:
        """The imagined last frames of every ``imagine_stride``-th window per store; adds their items."""
        from world_model.base import WorldModelMismatchError
        from world_model.learned import load_world_model
        from world_model.training import window_starts
        model = load_world_model(self.imagined_by)
        imagined = []
        for j, store in enumerate(stores):
            try:
                model.check_compatible(specs[store.embodiment])
            except WorldModelMismatchError as err:
                raise ConfigError(f"data.imagined_by: {err}") from err
            starts = window_starts(store, list(range(store.n_episodes)), model.execute_steps)[::self.imagine_stride]
            cache = self._cache_file(store, starts, self.seed + j)
            if cache is not None and cache.is_file():
                frames = np.load(cache)
            else:
                frames = imagined_last_frames(model, store, specs[store.embodiment], starts, seed=self.seed + j)
                if cache is not None:  # written whole or not at all
                    cache.parent.mkdir(parents=True, exist_ok=True)
                    tmp = cache.with_name(cache.name + ".tmp.npy")
                    np.save(tmp, frames)
                    tmp.replace(cache)
            imagined.append(frames)
            cut = self._held_out_from(store)
            for i, t in enumerate(starts + model.execute_steps):
                (self.train_items if t < cut else self.val_items).append((j, int(t), i))
        return imagined

    def _cache_file(self, store, starts: np.ndarray, seed: int) -> Path | None:
        """Where the imagined frames of ``store`` live in ``imagined_cache``: named by a hash of the world
        model's files (names, sizes, modification times), the store and its length, the window starts and
        the seed, so a changed model or store is imagined again."""
        if not self.imagined_cache:
            return None
        import hashlib
        h = hashlib.sha1()
        for f in sorted(Path(self.imagined_by).rglob("*")):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.relative_to(self.imagined_by)}:{st.st_size}:{st.st_mtime_ns};".encode())
        h.update(f"{Path(store.path).resolve()}:{store.n_frames}:{seed}:".encode())
        h.update(np.ascontiguousarray(starts, dtype=np.int64).tobytes())
        return Path(self.imagined_cache) / f"{Path(store.path).stem}-{h.hexdigest()[:16]}.npy"

    def setup(self, stage: str | None = None) -> None:
        self.prepare()
        self.train_set = FrameValues(self.train_items, self.paths, self.labels, self._index, self._cameras,
                                     self.imagined)
        self.val_set = FrameValues(self.val_items or self.train_items, self.paths, self.labels, self._index,
                                   self._cameras, self.imagined)

    def _loader(self, data, sampler=None):
        return DataLoader(data, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          collate_fn=lambda b: _collate(b, self.word_buckets),
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(self.seed)
        return self._loader(self.train_set, RandomSampler(self.train_set, replacement=True,
                                                          num_samples=self.samples_per_epoch, generator=generator))

    def val_dataloader(self):
        return self._loader(self.val_set)


class ProgressModule(ExportsOnCheckpoint, L.LightningModule):
    """Trains :class:`ProgressHead` by MSE on the normalized value label; ``head`` patches its config;
    ``export_dir``: the scorer directory written (atomically) at each checkpoint and when fitting ends."""
    exported = "progress scorer"

    def __init__(self, head: dict | None = None, lr: float = 1e-3, weight_decay: float = 1e-4,
                 warmup_steps: int = 50, export_dir: str | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.head: ProgressHead | None = None

    def configure_model(self) -> None:
        if self.head is not None:
            return
        data = self.trainer.datamodule
        data.prepare()
        settings = dict(self.hparams.head or {})
        settings.update(word_buckets=data.word_buckets, label_mean=data.label_mean, label_std=data.label_std)
        try:
            self.head = ProgressHead(**settings)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"model.head: cannot build the progress head ({err})") from err
        self.meta = {"embodiments": data.embodiments, "gamma": data.gamma, "label_mean": data.label_mean,
                     "label_std": data.label_std, "datasets": data.paths, "imagined_by": data.imagined_by}

    def _loss(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        pred = self.head(batch["frames"], batch["words"], batch["offsets"], batch["embodiment"])
        target = (batch["label"] - self.head.config.label_mean) / self.head.config.label_std
        return F.mse_loss(pred, target), pred

    def training_step(self, batch, batch_idx):
        loss, _ = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["label"]))
        return loss

    def validation_step(self, batch, batch_idx):
        loss, pred = self._loss(batch)
        value = pred * self.head.config.label_std + self.head.config.label_mean
        self.log_dict({"val/loss": loss, "val/mae": (value - batch["label"]).abs().mean()},
                      batch_size=len(batch["label"]))

    def _export(self) -> Path | None:
        if not (self.hparams.export_dir and self.head is not None and self.trainer.is_global_zero):
            return None
        with replace_directory(self.hparams.export_dir) as tmp:
            self.head.save_pretrained(str(tmp))
            (tmp / META_FILE).write_text(json.dumps(self.meta, indent=2) + "\n")
        return Path(self.hparams.export_dir)
