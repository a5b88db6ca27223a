"""The world-model checkpoint: a diffusers pipeline (autoencoder + latent video transformer + flow-matching
scheduler) and the metadata that says what it serves (docs/ARCHITECTURE.md, "World model").

A pipeline directory is what ``DiffusionPipeline.save_pretrained`` writes (``model_index.json``,
``vae/``, ``transformer/``, ``scheduler/``) plus ``world_model.json`` (:class:`WorldModelMeta`),
written atomically. Frames of the cameras are resized to one frame size and put side by side, so one
autoencoder image holds every camera of a time step.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DiffusionPipeline, FlowMatchEulerDiscreteScheduler

from components import action_space
from components.checkpoint_io import reading, replace_directory
from components.embodiment import EmbodimentSpec
from components.errors import CheckpointError, CheckpointNotFoundError

META_FILE = "world_model.json"
PIPELINE_FILES = ("model_index.json", META_FILE, "vae", "transformer", "scheduler")
RECOVER = "write it again with `vla-stack fit --config configs/train/world_model_tiny.yaml` (model.export_dir)"


@dataclass
class WorldModelMeta:
    """What a world-model checkpoint was trained for; :class:`~world_model.learned.LearnedWorldModel`
    refuses a policy or env that differs. ``embodiments``: name → ``{"index": i, "action_slots":
    [{name, canonical, low, high}], "cameras": {camera: [height, width]}}`` (the source camera sizes)."""
    cameras: list[str]
    frame_height: int
    frame_width: int
    context_frames: int
    num_frames: int
    execute_steps: int
    embodiments: dict[str, dict]
    slot_table: list[str] = field(default_factory=lambda: list(action_space.CANONICAL_SLOTS))
    num_inference_steps: int = 4
    delta_scale: float = 10.0  # the transformer's sample is (future latent - last context latent) * delta_scale
    guidance_scale: float = 1.0  # action guidance: > 1 needs a model trained with action dropout

    @staticmethod
    def embodiment_entry(spec: EmbodimentSpec, index: int) -> dict:
        return {"index": index, "action_slots": [dict(name=s.name, canonical=s.canonical, low=s.low, high=s.high)
                                                 for s in spec.action_slots],
                "cameras": {c.name: [c.height, c.width] for c in spec.cameras}}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "WorldModelMeta":
        with reading(path, "the world-model metadata"):
            raw = json.loads(path.read_text())
            meta = cls(**{k: raw[k] for k in ("cameras", "frame_height", "frame_width", "context_frames",
                                              "num_frames", "execute_steps", "embodiments", "slot_table",
                                              "num_inference_steps", "delta_scale")})
            meta.guidance_scale = float(raw.get("guidance_scale", 1.0))  # absent before action guidance
            return meta


def tiny_vae(overrides: dict | None = None) -> AutoencoderKL:
    """A small diffusers ``AutoencoderKL`` (3 levels: 4x downsampling, 4 latent channels, no attention)."""
    settings = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32, 64),
                    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                    layers_per_block=1, norm_num_groups=8, mid_block_add_attention=False, scaling_factor=1.0)
    settings.update(overrides or {})
    return AutoencoderKL(**settings)


def frames_to_pixels(images: dict[str, np.ndarray], meta: WorldModelMeta) -> torch.Tensor:
    """``{camera: uint8 [N, H, W, 3]}`` → float ``[N, 3, frame_height, frame_width * cameras]`` in [-1, 1]."""
    parts = []
    for camera in meta.cameras:
        x = torch.as_tensor(np.ascontiguousarray(images[camera])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        if x.shape[-2:] != (meta.frame_height, meta.frame_width):
            x = F.interpolate(x, size=(meta.frame_height, meta.frame_width), mode="area")
        parts.append(x)
    return torch.cat(parts, dim=-1)


def pixels_to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """``[..., 3, H, W]`` in [-1, 1] → uint8 ``[..., H, W, 3]``."""
    x = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()


class WorldModelPipeline(DiffusionPipeline):
    """Autoencoder + action-conditioned latent video transformer + ``FlowMatchEulerDiscreteScheduler``.
    One call integrates the flow of every batch item (K candidates) at once: one transformer forward
    per scheduler step. The flow runs on the change from the last context latent (scaled by
    ``meta.delta_scale``), so "nothing moves" is the zero sample; given the last real frame, the
    imagined frames are that frame plus the decoded change, which keeps the autoencoder's error on
    the static scene out of them."""

    model_cpu_offload_seq = "transformer->vae"

    def __init__(self, vae: AutoencoderKL, transformer, scheduler: FlowMatchEulerDiscreteScheduler):
        super().__init__()
        self.register_modules(vae=vae, transformer=transformer, scheduler=scheduler)
        self.meta: WorldModelMeta | None = None

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Latents ``[N, C, h, w]`` of pixels ``[N, 3, H, W]`` (the posterior mean: deterministic)."""
        return self.vae.encode(pixels).latent_dist.mode() * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents / self.vae.config.scaling_factor).sample

    @torch.no_grad()
    def __call__(self, context: torch.Tensor, actions: torch.Tensor, time_mask: torch.Tensor,
                 dim_mask: torch.Tensor, embodiment: torch.Tensor, num_inference_steps: int | None = None,
                 generator: torch.Generator | None = None, decode: bool = True,
                 last_pixels: torch.Tensor | None = None, noise_scale: float = 1.0,
                 guidance_scale: float | None = None):
        """Future latents ``[B, F, C, h, w]`` (and their decoded pixels ``[B, F, 3, H, W]``, or None) of
        context latents ``[B, Fc, C, h, w]`` under canonical chunks ``actions [B, H_max, D]``.
        ``last_pixels [B, 3, H, W]``: the last real frame, which the decoded change is added to.
        ``noise_scale`` < 1 starts the flow nearer its mean (0: one deterministic, lower-error future).
        ``guidance_scale`` w != 1: velocity = v(no action) + w (v(action) - v(no action)), both in one batched
        forward (classifier-free guidance on the action; the model must have been trained with action dropout)."""
        from world_model.models import without_actions
        steps = num_inference_steps or self.meta.num_inference_steps
        guidance = self.meta.guidance_scale if guidance_scale is None else float(guidance_scale)
        b, _, c, h, w = context.shape
        latents = noise_scale * torch.randn((b, self.meta.num_frames, c, h, w), generator=generator,
                                            dtype=context.dtype)
        self.scheduler.set_timesteps(steps)
        for timestep in self.scheduler.timesteps:
            t = (timestep / self.scheduler.config.num_train_timesteps).expand(b).to(context.dtype)
            if guidance == 1.0:
                velocity = self.transformer(latents, context, actions, time_mask, dim_mask, embodiment, t)
            else:
                none, no_dims = without_actions(actions, dim_mask)
                both = self.transformer(torch.cat([latents, latents]), torch.cat([context, context]),
                                        torch.cat([actions, none]), torch.cat([time_mask, time_mask]),
                                        torch.cat([dim_mask, no_dims]), torch.cat([embodiment, embodiment]),
                                        torch.cat([t, t]))
                conditional, unconditional = both.chunk(2)
                velocity = unconditional + guidance * (conditional - unconditional)
            latents = self.scheduler.step(velocity, timestep, latents, return_dict=False)[0]
        last = context[:, -1:]
        latents = last + latents / self.meta.delta_scale
        if not decode:
            return latents, None
        pixels = self.decode(latents.flatten(0, 1)).unflatten(0, (b, -1))
        if last_pixels is not None:
            pixels = (last_pixels[:, None] + pixels - self.decode(last[:, 0])[:, None]).clamp(-1, 1)
        return latents, pixels

    def save_pretrained(self, save_directory, **kwargs) -> None:
        """The pipeline directory with its ``world_model.json``, replaced in one atomic step."""
        if self.meta is None:
            raise ValueError("a WorldModelPipeline needs its .meta (WorldModelMeta) before it is saved")
        with replace_directory(save_directory) as tmp:
            super().save_pretrained(tmp, safe_serialization=True, **kwargs)
            self.meta.save(Path(tmp) / META_FILE)

    @classmethod
    def from_pretrained(cls, directory, **kwargs) -> "WorldModelPipeline":
        directory = require_pipeline(directory)
        meta = WorldModelMeta.load(directory / META_FILE)
        with reading(directory / "model_index.json", "the pipeline index"):
            json.loads((directory / "model_index.json").read_text())
        try:
            pipe = super().from_pretrained(str(directory), local_files_only=True, **kwargs)
        except CheckpointError:
            raise
        except Exception as err:
            raise CheckpointError(f"{directory}: cannot load the world-model pipeline ({type(err).__name__}: "
                                  f"{' '.join(str(err).split())[:300]}); a file under it is missing, truncated or "
                                  f"edited; {RECOVER}") from err
        pipe.meta = meta
        return pipe


def require_pipeline(directory) -> Path:
    """``directory`` once it holds a world-model pipeline; else a CheckpointNotFoundError naming what is missing."""
    directory = Path(directory)
    expected = f"a world-model directory holds {', '.join(PIPELINE_FILES)}"
    if not directory.is_dir():
        what = "does not exist" if not directory.exists() else "is a file"
        raise CheckpointNotFoundError(f"world-model directory '{directory}' {what} ({expected})")
    missing = [f for f in PIPELINE_FILES if not (directory / f).exists()]
    if missing:
        present = sorted(p.name for p in directory.iterdir())
        hint = " (it is a VLA policy checkpoint)" if (directory / "norm_stats.json").exists() else ""
        raise CheckpointNotFoundError(f"'{directory}' is not a world-model directory{hint}: no {', '.join(missing)} "
                                      f"(it has {', '.join(present) or 'nothing'}); {expected}; {RECOVER}")
    return directory


def build_pipeline(meta: WorldModelMeta, architecture: str = "dit", vae: dict | None = None,
                   transformer: dict | None = None, num_embodiments: int = 8,
                   autoencoder: AutoencoderKL | None = None) -> WorldModelPipeline:
    """A freshly initialized pipeline for ``meta`` (``architecture``: ``dit`` or ``wan``); ``autoencoder``:
    a trained one to use instead of a fresh :func:`tiny_vae`."""
    from world_model.models import ARCHITECTURES
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture '{architecture}' is not one of {sorted(ARCHITECTURES)}")
    autoencoder = autoencoder if autoencoder is not None else tiny_vae(vae)
    factor = 2 ** (len(autoencoder.config.block_out_channels) - 1)
    channels = autoencoder.config.latent_channels
    shared = dict(latent_channels=channels, context_frames=meta.context_frames, num_frames=meta.num_frames,
                  num_embodiments=num_embodiments)
    if architecture == "dit":
        shared.update(latent_height=meta.frame_height // factor,
                      latent_width=meta.frame_width * len(meta.cameras) // factor)
        model = ARCHITECTURES["dit"](**shared, **(transformer or {}))
    else:
        model = ARCHITECTURES["wan"](**shared, wan=transformer)
    pipe = WorldModelPipeline(autoencoder, model, FlowMatchEulerDiscreteScheduler(shift=1.0))
    pipe.meta = meta
    return pipe
