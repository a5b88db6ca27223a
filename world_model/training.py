"""Training the world model with the same ``vla-stack fit`` (LightningCLI; docs/ARCHITECTURE.md, "World model").

A sample is one window of an episode store: the context frames at t-Fc+1..t (the first frame
repeated before an episode's start), the action chunk from t in canonical form, and the target
frames at t + predicted_steps(execute_steps, F). The autoencoder and the transformer train jointly:
reconstruction (+ a small KL) on every frame of the window, and flow matching on the posterior means
of the autoencoder being trained (detached, so the flow loss does not shape the latent space).
"""
from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from torch.utils.data import DataLoader, Dataset, RandomSampler
from tqdm.auto import tqdm

from components.checkpoint_io import replace_directory
from components.datamodule import open_checked_stores
from components.embodiment import EmbodimentSpec
from components.episode_store import EpisodeStore
from components.errors import ConfigError
from components.training import ExportsOnCheckpoint
from world_model.base import predicted_steps
from world_model.models import canonical_actions, without_actions
from world_model.pipeline import WorldModelMeta, build_pipeline, frames_to_pixels


def window_starts(store: EpisodeStore, episodes: list[int], execute_steps: int) -> np.ndarray:
    """Global frames t of ``episodes`` whose last target frame t + execute_steps lies in the same episode."""
    ends = store.episode_ends
    starts = [np.arange(ends[e - 1] if e else 0, ends[e] - execute_steps) for e in episodes]
    return np.concatenate(starts).astype(np.int64) if starts else np.zeros(0, np.int64)


def _pixel_blocks(store: EpisodeStore, meta: WorldModelMeta, block: int):
    """``store``'s frames in blocks of ``block`` rows, as the model sees them (``frames_to_pixels``)."""
    keys = [f"images/{c}" for c in meta.cameras]
    for lo in range(0, store.n_frames, block):
        yield frames_to_pixels(store.get_rows(slice(lo, min(lo + block, store.n_frames)), keys)["images"], meta)


def store_pixels(store: EpisodeStore, meta: WorldModelMeta, block: int = 512) -> np.ndarray:
    """Every frame of ``store`` as the model sees it, float16 ``[n_frames, 3, H, W * cameras]``: read and
    resized once, so training windows cost an index instead of a decompression per frame and camera."""
    out = np.zeros((store.n_frames, 3, meta.frame_height, meta.frame_width * len(meta.cameras)), np.float16)
    for lo, pixels in zip(range(0, store.n_frames, block), _pixel_blocks(store, meta, block)):
        out[lo:lo + len(pixels)] = pixels.numpy()
    return out


@torch.no_grad()
def store_latents(store: EpisodeStore, meta: WorldModelMeta, vae, block: int = 256) -> np.ndarray:
    """Every frame of ``store`` encoded by a frozen autoencoder (posterior mean x scaling factor),
    float16 ``[n_frames, C, h, w]``: the transformer then trains without running the autoencoder."""
    return np.concatenate([(vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor).half().numpy()
                           for pixels in _pixel_blocks(store, meta, block)])


class WindowSamples(Dataset):
    """Windows ``(store, t)`` → context and target frames (side by side at the frame size), the
    canonical action chunk and masks, and the embodiment index. ``cached``: per store, the frames from
    :func:`store_pixels` (``key="pixels"``) or :func:`store_latents` (``key="latents"``); without it
    each window reads and resizes its frames from the store."""

    def __init__(self, paths: list[str], starts: list[np.ndarray], meta: WorldModelMeta, specs: dict,
                 cached: list[np.ndarray] | None = None, key: str = "pixels"):
        self.paths, self.starts, self.meta, self.specs = paths, starts, meta, specs
        self.cached, self.key = cached, key
        self.offsets = np.cumsum([0] + [len(s) for s in starts])
        self._stores: dict[int, EpisodeStore] = {}  # opened lazily: each worker opens its own

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def store(self, j: int) -> EpisodeStore:
        if j not in self._stores:
            self._stores[j] = EpisodeStore.open(self.paths[j])
        return self._stores[j]

    def __getitem__(self, i: int) -> dict:
        j = int(np.searchsorted(self.offsets, i, side="right") - 1)
        t = int(self.starts[j][i - self.offsets[j]])
        store = self.store(j)
        return window(store, t, self.meta, self.specs[store.embodiment],
                      None if self.cached is None else self.cached[j], self.key)


def window(store: EpisodeStore, t: int, meta: WorldModelMeta, spec: EmbodimentSpec,
           cached: np.ndarray | None = None, key: str = "pixels") -> dict:
    """One training/evaluation sample at global frame ``t`` of ``store`` (see the module docstring);
    ``cached``: the store's frames as pixels or latents (``key``), if they are held in memory."""
    first = store.episode_slice(store.episode_of(t)).start
    context = [max(first, t - i) for i in range(meta.context_frames - 1, -1, -1)]
    targets = [t + s for s in predicted_steps(meta.execute_steps, meta.num_frames)]
    rows = context + targets
    if cached is not None:
        frames = torch.from_numpy(cached[rows].astype(np.float32))
    else:
        images = {c: np.stack([store.get_frame(r, [f"images/{c}"])["images"][c] for r in rows]) for c in meta.cameras}
        frames, key = frames_to_pixels(images, meta), "pixels"
    chunk, valid = store.get_window(t, spec.chunk_horizon)
    actions, time_mask, dim_mask = canonical_actions(chunk[None], spec)
    time_mask[0, len(valid):] = False
    time_mask[0, :len(valid)] &= valid
    return {key: frames, "actions": torch.as_tensor(actions[0]), "time_mask": torch.as_tensor(time_mask[0]),
            "dim_mask": torch.as_tensor(dim_mask[0]),
            "embodiment": torch.tensor(int(meta.embodiments[spec.name]["index"]))}


class WorldModelDataModule(L.LightningDataModule):
    """Windows over episode stores (expert stores and recorded rollouts alike). ``val_episodes``: the last
    N episodes of each store are held out (validation, and what eval-world-model reads by default).
    The window geometry (cameras, frame size, context, predicted steps) is the model's. ``cache_frames``:
    hold every frame in memory at the model's frame size (float16: 2 x 3 x H x W x cameras bytes per frame);
    with a frozen autoencoder (``model.autoencoder``) the frames' latents are held instead, always."""

    def __init__(self, datasets: list[str], batch_size: int = 16, num_workers: int = 2,
                 samples_per_epoch: int = 4096, val_episodes: int = 2, seed: int = 0, cache_frames: bool = True):
        super().__init__()
        if not datasets:
            raise ConfigError("data.datasets is empty: give at least one episode store path")
        self.paths = [str(d) for d in datasets]
        self.cache_frames = cache_frames
        self.batch_size, self.num_workers = batch_size, num_workers
        self.samples_per_epoch, self.val_episodes, self.seed = samples_per_epoch, val_episodes, seed
        self.specs = None
        self.train_set = self.val_set = None

    def prepare(self) -> None:
        """Open and check the stores (cameras, widths, ranges); sets :attr:`specs` (name → spec)."""
        if self.specs is not None:
            return
        stores, embodiments = open_checked_stores(self.paths)
        self.specs = {name: embodiments[name] for name in sorted({s.embodiment for s in stores})}
        self._stores = stores

    def setup(self, stage: str | None = None) -> None:
        self.prepare()
        module = self.trainer.lightning_module
        module.configure_model()  # the window geometry is the model's; Lightning calls this hook after setup
        meta = module.meta
        train, val = [], []
        for store in self._stores:
            held = min(self.val_episodes, store.n_episodes - 1)
            episodes = list(range(store.n_episodes))
            train.append(window_starts(store, episodes[:store.n_episodes - held], meta.execute_steps))
            val.append(window_starts(store, episodes[store.n_episodes - held:], meta.execute_steps))
            if not len(train[-1]):
                raise ConfigError(f"data.datasets: {store.path}: no episode is longer than execute_steps="
                                  f"{meta.execute_steps} frames, so there is no window to train on")
        cached, key = None, "pixels"
        frozen = getattr(module, "frozen_vae", None)
        if self.cache_frames or frozen is not None:
            key = "pixels" if frozen is None else "latents"
            cached = [store_pixels(store, meta) if frozen is None else store_latents(store, meta, frozen)
                      for store in tqdm(self._stores, desc=f"caching {key}", unit="store")]
        self.train_set = WindowSamples(self.paths, train, meta, self.specs, cached, key)
        self.val_set = WindowSamples(self.paths, val, meta, self.specs, cached, key)

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(self.seed)
        sampler = RandomSampler(self.train_set, replacement=True, num_samples=self.samples_per_epoch,
                                generator=generator)
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def val_dataloader(self):
        data = self.val_set if len(self.val_set) else self.train_set
        return DataLoader(data, batch_size=self.batch_size, num_workers=self.num_workers)


class WorldModelModule(ExportsOnCheckpoint, L.LightningModule):
    """The world-model pipeline's autoencoder and transformer trained jointly (see the module docstring).

    ``architecture``: ``dit`` (the project's :class:`~world_model.models.LatentVideoDiT`) or ``wan`` (a
    stock diffusers ``WanTransformer3DModel``); ``vae`` / ``transformer`` patch their tiny configs.
    ``cameras``: the cameras it sees (default: the data's embodiment's). ``frame_height`` /
    ``frame_width``: per camera. ``execute_steps`` / ``num_frames``: frames are predicted at
    ``predicted_steps(execute_steps, num_frames)``. ``delta_scale``: the flow's sample is the
    change from the last context latent times this (about unit scale). ``export_dir``: the pipeline directory written
    (atomically) at each Lightning checkpoint and when fitting ends. ``autoencoder``: a trained autoencoder
    (what :class:`AutoencoderModule` exports, or a world-model pipeline directory, whose ``vae/`` is used),
    frozen: only the transformer trains, on latents cached once. Resume: ``--ckpt_path last``."""
    exported = "world-model pipeline"

    def __init__(self, architecture: str = "dit", cameras: list[str] | None = None, frame_height: int = 48,
                 frame_width: int = 64, context_frames: int = 2, num_frames: int = 4, execute_steps: int = 10,
                 delta_scale: float = 10.0, vae: dict | None = None, transformer: dict | None = None, num_embodiments: int = 8,
                 num_inference_steps: int = 4, lr: float = 1e-3, weight_decay: float = 0.0,
                 warmup_steps: int = 20, kl_weight: float = 1e-4, export_dir: str | None = None,
                 autoencoder: str | None = None, action_dropout: float = 0.0, guidance_scale: float = 1.0):
        super().__init__()
        self.save_hyperparameters()
        if not 0.0 <= action_dropout < 1.0:
            raise ConfigError(f"model.action_dropout must be in [0, 1), got {action_dropout}")
        if guidance_scale != 1.0 and action_dropout == 0.0:
            raise ConfigError(f"model.guidance_scale {guidance_scale} needs model.action_dropout > 0 (the "
                              f"action-free velocity it subtracts is only learned with dropout)")
        if not 1 <= context_frames <= 2:
            raise ConfigError(f"model.context_frames must be 1 or 2, got {context_frames}")
        if execute_steps < num_frames:
            raise ConfigError(f"model.execute_steps ({execute_steps}) must be >= model.num_frames ({num_frames})")
        self.meta: WorldModelMeta | None = None
        self.pipeline = None

    def configure_model(self) -> None:
        """Built once the data's embodiments are known (they fix the metadata and embodiment indices)."""
        if self.pipeline is not None:
            return
        hp = self.hparams
        datamodule = self.trainer.datamodule
        datamodule.prepare()
        specs = datamodule.specs
        if len(specs) > hp.num_embodiments:
            raise ConfigError(f"the data have {len(specs)} embodiments, model.num_embodiments is {hp.num_embodiments}")
        cameras = hp.cameras or specs[next(iter(specs))].camera_names
        for name, spec in specs.items():
            missing = [c for c in cameras if c not in spec.camera_names]
            if missing:
                raise ConfigError(f"model.cameras {cameras}: embodiment '{name}' of the data has no camera(s) "
                                  f"{missing} (it has {spec.camera_names})")
        self.meta = WorldModelMeta(
            cameras=list(cameras), frame_height=hp.frame_height, frame_width=hp.frame_width,
            context_frames=hp.context_frames, num_frames=hp.num_frames, execute_steps=hp.execute_steps,
            embodiments={name: WorldModelMeta.embodiment_entry(spec, i) for i, (name, spec) in enumerate(specs.items())},
            num_inference_steps=hp.num_inference_steps, delta_scale=hp.delta_scale,
            guidance_scale=hp.guidance_scale)
        autoencoder = load_autoencoder(hp.autoencoder) if hp.autoencoder else None
        try:
            self.pipeline = build_pipeline(self.meta, hp.architecture, hp.vae, hp.transformer, hp.num_embodiments,
                                           autoencoder=autoencoder)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"model: cannot build the world model ({err})") from err
        self.vae, self.transformer = self.pipeline.vae, self.pipeline.transformer  # registered as submodules
        if autoencoder is not None:
            self.vae.requires_grad_(False)
            self.vae.eval()

    @property
    def frozen_vae(self):
        """The autoencoder when it is frozen (``model.autoencoder``), else None."""
        return self.vae if self.hparams.autoencoder and self.pipeline is not None else None

    def autoencoder_losses(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction MSE, per-element KL and the (detached, scaled) posterior means of ``pixels [N, 3, H, W]``."""
        posterior = self.vae.encode(pixels).latent_dist
        recon = self.vae.decode(posterior.sample()).sample
        kl = posterior.kl().mean() / math.prod(posterior.mean.shape[1:])
        return F.mse_loss(recon, pixels), kl, (posterior.mean * self.vae.config.scaling_factor).detach()

    def losses(self, batch) -> dict[str, torch.Tensor]:
        out = {}
        if "latents" in batch:  # a frozen autoencoder: its latents were cached
            latents = batch["latents"]
            b = latents.shape[0]
        else:
            pixels = batch["pixels"]  # [B, Fc + F, 3, H, W]
            b, n = pixels.shape[:2]
            out["reconstruction"], out["kl"], latents = self.autoencoder_losses(pixels.flatten(0, 1))
            latents = latents.unflatten(0, (b, n))
        context, future = latents[:, :self.meta.context_frames], latents[:, self.meta.context_frames:]
        target = (future - context[:, -1:]) * self.meta.delta_scale  # the pipeline's sample space
        t = torch.rand(b, device=latents.device)
        noise = torch.randn_like(target)
        noisy = t.view(b, 1, 1, 1, 1) * noise + (1 - t.view(b, 1, 1, 1, 1)) * target
        actions, dim_mask = batch["actions"], batch["dim_mask"]
        if self.training and self.hparams.action_dropout > 0:  # the action-free velocity that guidance needs
            actions, dim_mask = without_actions(actions, dim_mask,
                                                torch.rand(b, device=latents.device) < self.hparams.action_dropout)
        velocity = self.transformer(noisy, context, actions, batch["time_mask"], dim_mask, batch["embodiment"], t)
        flow = F.mse_loss(velocity, noise - target)
        autoencoder = out["reconstruction"] + self.hparams.kl_weight * out["kl"] if "reconstruction" in out else 0.0
        out.update(loss=autoencoder + flow, flow=flow)
        if not self.training:  # one Euler step from t = 1 gives the mean future: its latent error against copy-last
            ones = torch.ones(b, device=latents.device)
            mean = noise - self.transformer(noise, context, batch["actions"], batch["time_mask"], batch["dim_mask"],
                                            batch["embodiment"], ones)
            out.update(latent_mse_mean=F.mse_loss(mean, target) / self.meta.delta_scale ** 2,
                       latent_mse_copy_last=target.pow(2).mean() / self.meta.delta_scale ** 2)
        return out

    def training_step(self, batch, batch_idx):
        losses = self.losses(batch)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=len(batch["actions"]))
        return losses["loss"]

    def validation_step(self, batch, batch_idx):
        losses = self.losses(batch)
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, batch_size=len(batch["actions"]))

    def _export(self) -> Path | None:
        if self.hparams.export_dir and self.pipeline is not None and self.trainer.is_global_zero:
            self.pipeline.save_pretrained(self.hparams.export_dir)
            return Path(self.hparams.export_dir)
        return None


class AutoencoderModule(WorldModelModule):
    """Stage 1 of two-stage world-model training: the autoencoder alone (reconstruction + KL on every
    frame of the windows), exported as a diffusers ``AutoencoderKL`` directory for
    ``WorldModelModule(autoencoder=...)`` (configs/train/world_model_vae_tiny.yaml)."""
    exported = "autoencoder"
    # the parent's other arguments: the transformer it builds is unused, the rest its defaults
    FIXED = {"architecture": "dit", "transformer": {"dim": 8, "depth": 1, "heads": 1}, "delta_scale": 10.0,
             "num_embodiments": 8, "num_inference_steps": 4, "autoencoder": None, "action_dropout": 0.0,
             "guidance_scale": 1.0}

    def __init__(self, cameras: list[str] | None = None, frame_height: int = 48, frame_width: int = 64,
                 context_frames: int = 2, num_frames: int = 4, execute_steps: int = 10, vae: dict | None = None,
                 lr: float = 1e-3, weight_decay: float = 0.0, warmup_steps: int = 20, kl_weight: float = 1e-4,
                 export_dir: str | None = None):
        super().__init__(cameras=cameras, frame_height=frame_height, frame_width=frame_width,
                         context_frames=context_frames, num_frames=num_frames, execute_steps=execute_steps, vae=vae,
                         lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps, kl_weight=kl_weight,
                         export_dir=export_dir, **self.FIXED)
        self.hparams.update(self.FIXED)  # save_hyperparameters keeps this class's own arguments only

    def losses(self, batch) -> dict[str, torch.Tensor]:
        reconstruction, kl, _ = self.autoencoder_losses(batch["pixels"].flatten(0, 1))
        return {"loss": reconstruction + self.hparams.kl_weight * kl, "reconstruction": reconstruction, "kl": kl}

    def _export(self) -> Path | None:
        if self.hparams.export_dir and self.pipeline is not None and self.trainer.is_global_zero:
            with replace_directory(self.hparams.export_dir) as tmp:
                self.vae.save_pretrained(tmp, safe_serialization=True)
            return Path(self.hparams.export_dir)
        return None


def load_autoencoder(path: str | Path) -> AutoencoderKL:
    """The ``AutoencoderKL`` of an autoencoder directory or of a world-model pipeline directory (its ``vae/``)."""
    directory = Path(path)
    if (directory / "vae" / "config.json").is_file():
        directory = directory / "vae"
    if not (directory / "config.json").is_file():
        raise ConfigError(f"model.autoencoder: '{path}' is not an autoencoder directory (no config.json; expected "
                          f"what `vla-stack fit --config configs/train/world_model_vae_tiny.yaml` exports, or a "
                          f"world-model pipeline directory with vae/)")
    try:
        return AutoencoderKL.from_pretrained(str(directory), local_files_only=True)
    except Exception as err:
        raise ConfigError(f"model.autoencoder: cannot load '{directory}' ({type(err).__name__}: "
                          f"{' '.join(str(err).split())[:300]})") from err
