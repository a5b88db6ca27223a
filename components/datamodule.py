"""Training data: windows from several episode stores, mixed by weight across embodiments and tasks."""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from components import action_space
from components.backbone import load_tokenizer, make_image_processor
from components.checkpoint_io import reading, require_files
from components.embodiment import Embodiments
from components.episode_store import EpisodeStore
from components.errors import CheckpointNotFoundError, ConfigError, StoreError, StoreNotFoundError
from components.normalization import NormStats, compute_stats, load_stats
from components.processor import VLAProcessor
from components.vla import load_model_config


@dataclass
class Oversample:
    """Extra samples drawn from the first ``first_frames`` frames of each episode of the entry's
    store, with their own share ``weight`` of the mixture (e.g. the approach of a reach)."""
    first_frames: int
    weight: float


@dataclass
class DatasetEntry:
    """One episode store in the mixture; ``weight`` is its share of the samples. ``first_frames``:
    train on the first N frames of each episode only (e.g. the approach of a reach episode, not
    the long hold at the target that follows and would dilute it); None uses every frame.
    ``oversample``: further shares of the same store, each over its episodes' first frames."""
    path: str
    weight: float = 1.0
    first_frames: int | None = None
    oversample: list[Oversample] = field(default_factory=list)

    def __post_init__(self):
        self.oversample = [o if isinstance(o, Oversample) else Oversample(**o) for o in self.oversample]
        for first_frames in [self.first_frames] + [o.first_frames for o in self.oversample]:
            if first_frames is not None and int(first_frames) < 1:
                raise ConfigError(f"data.datasets: {self.path}: first_frames must be a positive number of frames, "
                                  f"got {first_frames}")

    def parts(self) -> list[tuple[int | None, float]]:
        """``(first_frames, weight)`` of each share this entry adds to the mixture, in order: its
        own, then its ``oversample`` items."""
        return [(self.first_frames, self.weight)] + [(o.first_frames, o.weight) for o in self.oversample]


def _lowdim(store: EpisodeStore, key: str) -> np.ndarray:
    """``[N, width]`` rows of a small array, leaving out the frames of skipped damaged episodes."""
    values = store.lowdim(key)
    if store.skipped:
        values = values[usable_frames(store)]
    return values.reshape(-1, values.shape[-1])


def usable_frames(store: EpisodeStore) -> np.ndarray:
    """bool [n_frames]: False on the frames of the episodes the store skips (damaged ones)."""
    episode = np.searchsorted(store.episode_ends, np.arange(store.n_frames), side="right")
    return ~np.isin(episode, list(store.skipped))


def check_store(store: EpisodeStore, embodiments: Embodiments) -> None:
    """Every value of the store's actions and states lies in its embodiment's declared ranges."""
    spec = embodiments[store.embodiment]
    missing = [c for c in spec.camera_names if c not in store.cameras]
    if missing:
        raise StoreError(f"{store.path}: embodiment '{spec.name}' needs camera(s) {missing}, "
                         f"the store has {store.cameras}")
    spec.check_range("action", _lowdim(store, "action"), store.path)
    if spec.state_dim:
        spec.check_range("state", _lowdim(store, "state"), store.path)


def open_checked_stores(paths: list[str], where: str = "data.datasets",
                        skip_damaged: bool = False, known: Embodiments | None = None) -> tuple[list[EpisodeStore], Embodiments]:
    """Open episode stores and check each against its embodiment spec (cameras, widths, ranges).

    ``skip_damaged``: read every chunk once and leave out the episodes with an unreadable one
    (``store.skipped``), with a warning naming each; otherwise the first damaged chunk read is a
    StoreError that says how to recover. ``known``: specs to use (and keep) instead of
    configs/embodiments for the names they have (a base checkpoint's).
    """
    stores = []
    for i, path in enumerate(paths):
        if not Path(path).exists():
            raise StoreNotFoundError(f"{where}: episode store '{path}' does not exist (expected a store written "
                                     f"by vla-stack collect or synth)")
        try:
            stores.append(EpisodeStore.open(path, skip_damaged=skip_damaged))
        except StoreError as err:
            raise StoreError(f"{where}[{i}]: {err}") from err
    names = sorted({s.embodiment for s in stores})
    embodiments = Embodiments.from_config_dir([n for n in names if known is None or n not in known])
    if known is not None:  # the specs a base checkpoint was trained with win over configs/embodiments
        embodiments = Embodiments([known[n] for n in known.names()] + list(embodiments))
    for s in stores:
        for episode, why in s.skipped.items():
            warnings.warn(f"skipping damaged episode {episode}: {why}", stacklevel=2)
        if s.skipped and len(s.skipped) == s.n_episodes:
            raise StoreError(f"{where}: every episode of {s.path} is damaged; nothing is left to train on: "
                             "collect the data again")
        check_store(s, embodiments)
    return stores, embodiments


def compute_embodiment_stats(stores: list[EpisodeStore], embodiments: Embodiments) -> dict[str, dict[str, NormStats]]:
    """q01/q99 per canonical dimension over all stores of each embodiment (masked dims skipped). A
    store listed more than once (e.g. again with ``first_frames``) counts once."""
    stats = {}
    for name in sorted({s.embodiment for s in stores}):
        spec = embodiments[name]
        mine = list({str(Path(s.path).resolve()): s for s in stores if s.embodiment == name}.values())
        actions = np.concatenate([action_space.pad(_lowdim(s, "action"), spec.action_indices) for s in mine])
        entry = {"action": compute_stats(actions, spec.action_mask)}
        if spec.state_dim:
            states = np.concatenate([action_space.pad(_lowdim(s, "state"), spec.state_indices) for s in mine])
            entry["state"] = compute_stats(states, spec.state_mask)
        stats[name] = entry
    return stats


def share_stats(new: dict[str, NormStats], donor: dict[str, NormStats]) -> dict[str, NormStats]:
    """``new``'s statistics with the ``donor``'s on every canonical dimension both carry (action and
    state each), so an added embodiment reads shared slots exactly as the donor's trained model does."""
    out = {}
    for key, s in new.items():
        d = donor.get(key)
        if d is None:
            out[key] = s
            continue
        both = s.mask & d.mask
        out[key] = NormStats(np.where(both, d.q01, s.q01), np.where(both, d.q99, s.q99), s.mask, s.count)
    return out


class WindowDataset(Dataset):
    """Item ``i`` -> one processed sample: observation at frame t and the action chunk from t."""

    def __init__(self, paths: list[str], frames: list[np.ndarray], processor: VLAProcessor,
                 skip_damaged: bool = False):
        self.paths = paths
        self.frames = frames  # per store: the global frame indices this split may use
        self.offsets = np.cumsum([0] + [len(f) for f in frames])
        self.processor = processor
        self.skip_damaged = skip_damaged  # the frames leave out damaged episodes; their rows may not read
        self._stores: dict[int, EpisodeStore] = {}  # opened lazily: each worker opens its own

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def store(self, j: int) -> EpisodeStore:
        if j not in self._stores:
            self._stores[j] = EpisodeStore.open(self.paths[j], skip_damaged=self.skip_damaged)
        return self._stores[j]

    def __getitem__(self, i: int) -> dict:
        j = int(np.searchsorted(self.offsets, i, side="right") - 1)
        t = int(self.frames[j][i - self.offsets[j]])
        store = self.store(j)
        spec = self.processor.embodiments[store.embodiment]
        keys = ["state"] + [f"images/{c}" for c in spec.camera_names]
        frame = store.get_frame(t, keys)
        actions, time_mask = store.get_window(t, spec.chunk_horizon)
        sample = self.processor.encode_observation(frame["images"], frame["state"], frame["instruction"], spec.name)
        sample.update(self.processor.encode_actions(actions, time_mask, spec.name))
        sample["embodiment"] = spec.name
        return sample


def _base_checkpoint(directory: str) -> tuple[Embodiments, dict[str, dict[str, NormStats]]]:
    """The embodiments and normalization statistics of the checkpoint ``directory`` (checked digest)."""
    try:
        d = require_files(directory, ("config.json", "embodiments.yaml", "norm_stats.json"))
    except CheckpointNotFoundError as err:
        raise CheckpointNotFoundError(f"data.base: {err}") from err
    with reading(d / "config.json", "the checkpoint config"):
        sha = json.loads((d / "config.json").read_text()).get("norm_stats_sha256")
    with reading(d, "the processor (embodiments.yaml, norm_stats.json)"):
        return VLAProcessor.load_specs_and_stats(d, sha)


class MixtureDataModule(L.LightningDataModule):
    """Stores mixed by weight. ``model`` names the model config whose tokenizer and image size the
    samples are prepared for, ``model_overrides`` its overrides (a motion adapter's frames); the CLI
    links both from the model's arguments.

    ``val_episodes``: the last N episodes of each store are held out for validation/test; 0 uses
    (a fixed subset of) the training frames, which is what an overfitting check wants.
    ``skip_damaged_episodes``: leave out, with a warning, the episodes of a store with an
    unreadable chunk (found by reading every chunk once at setup); by default a damaged chunk is
    an error naming the store, array and episodes.
    ``base``: a checkpoint directory whose embodiments and normalization statistics the processor
    keeps (adding an embodiment to a trained model: pair it with ``model.init_from``); the stores'
    embodiments it lacks get statistics from their stores, except on the canonical slots they share
    with the base embodiment ``share_stats`` names for them ({new: base}).
    """

    def __init__(self, datasets: list[DatasetEntry], model: str = "tiny", batch_size: int = 16,
                 num_workers: int = 2, samples_per_epoch: int = 1024, val_episodes: int = 0,
                 val_samples: int = 64, norm_stats: str | None = None, seed: int = 0,
                 skip_damaged_episodes: bool = False, base: str | None = None,
                 share_stats: dict[str, str] | None = None, model_overrides: dict | None = None):
        super().__init__()
        if share_stats and not base:
            raise ConfigError("data.share_stats names embodiments of a base checkpoint, but data.base is not set")
        if base and norm_stats:
            raise ConfigError("data.base brings the base checkpoint's normalization statistics; leave data.norm_stats unset")
        if not datasets:
            raise ConfigError("data.datasets is empty: give at least one {path, weight} episode store")
        self.datasets = [d if isinstance(d, DatasetEntry) else DatasetEntry(**d) for d in datasets]
        self.model = model
        self.model_overrides = model_overrides
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.samples_per_epoch = samples_per_epoch
        self.val_episodes = val_episodes
        self.val_samples = val_samples
        self.norm_stats_path = norm_stats
        self.seed = seed
        self.skip_damaged_episodes = skip_damaged_episodes
        self.base = base
        self.share_stats = dict(share_stats or {})
        self.processor: VLAProcessor | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.processor is not None:
            return
        known = base_stats = None
        if self.base:
            known, base_stats = _base_checkpoint(self.base)
        stores, embodiments = open_checked_stores([d.path for d in self.datasets],
                                                  skip_damaged=self.skip_damaged_episodes, known=known)
        if base_stats is not None:
            new = [s for s in stores if s.embodiment not in base_stats]
            stats = dict(base_stats)
            for name, entry in compute_embodiment_stats(new, embodiments).items():
                donor = self.share_stats.get(name)
                if donor is not None and donor not in base_stats:
                    raise ConfigError(f"data.share_stats: {name} -> {donor!r}, but {self.base} has no embodiment "
                                      f"{donor!r} (it has {sorted(base_stats)})")
                stats[name] = share_stats(entry, base_stats[donor]) if donor else entry
            unknown = sorted(set(self.share_stats) - {s.embodiment for s in new})
            if unknown:
                raise ConfigError(f"data.share_stats: {unknown} are not new embodiments of the stores "
                                  f"(new: {sorted({s.embodiment for s in new})})")
        else:
            stats = (load_stats(self.norm_stats_path) if self.norm_stats_path
                     else compute_embodiment_stats(stores, embodiments))
        model_cfg = load_model_config(self.model, self.model_overrides)
        cfg = model_cfg.backbone
        self.processor = VLAProcessor(load_tokenizer(cfg), make_image_processor(cfg), embodiments, stats,
                                      cfg.image_size)
        self.processor.set_motion(model_cfg.decoder.motion_adapter, model_cfg.decoder.motion_size)
        paths, train, val, weights = [], [], [], []  # one item per share of the mixture
        for s, entry in zip(stores, self.datasets):
            n_val = min(self.val_episodes, s.n_episodes - 1)
            cut = int(s.episode_ends[s.n_episodes - n_val - 1])
            frames = np.arange(cut)
            in_episode = frames - np.r_[0, s.episode_ends[:-1]][np.searchsorted(s.episode_ends, frames, side="right")]
            val_frames = np.arange(cut, s.n_frames) if n_val else np.arange(cut)
            if s.skipped:
                usable = usable_frames(s)
                keep = usable[frames]
                frames, in_episode, val_frames = frames[keep], in_episode[keep], val_frames[usable[val_frames]]
                if not len(frames):
                    raise StoreError(f"{s.path}: no training frames left after skipping its damaged episodes "
                                     f"{sorted(s.skipped)}; collect the data again")
            for first_frames, weight in entry.parts():
                paths.append(s.path)
                train.append(frames if first_frames is None else frames[in_episode < first_frames])
                val.append(val_frames)
                weights.append(weight)
        self.train_set = WindowDataset(paths, train, self.processor, self.skip_damaged_episodes)
        self.val_set = WindowDataset(paths, val, self.processor, self.skip_damaged_episodes)
        self.train_weights = torch.cat([torch.full((len(f),), w / len(f), dtype=torch.double)
                                        for f, w in zip(train, weights)])
        rng = np.random.default_rng(self.seed)
        self.val_indices = rng.choice(len(self.val_set), size=min(self.val_samples, len(self.val_set)),
                                      replace=False)

    def _loader(self, dataset, **kwargs) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                          collate_fn=self.processor.collate, persistent_workers=self.num_workers > 0,
                          **kwargs)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        sampler = WeightedRandomSampler(self.train_weights, self.samples_per_epoch, replacement=True,
                                        generator=generator)
        return self._loader(self.train_set, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(torch.utils.data.Subset(self.val_set, self.val_indices.tolist()))

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()
