"""The VLA: backbone (once per observation) + DiT decoder (N Euler steps for K candidates).

Flow matching as in pi0: ``x_t = t * noise + (1 - t) * actions`` with ``t ~ Beta(1.5, 1)``, the
decoder predicts ``u = noise - actions``, and sampling integrates from t=1 (noise) to t=0 with
Euler steps. Padding never matters: padded dimensions and time steps are zeroed in ``x_t``, kept
out of attention and out of the loss.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from components.backbone import Backbone, BackboneConfig
from components.checkpoint_io import RECOVER, reading, require_files
from components.dit import DiT, DiTConfig
from components.config_files import config_path
from components.errors import CheckpointError, ConfigError, ConfigNotFoundError, yaml_problem

MODEL_CONFIG_DIR = config_path("model")


@dataclass
class VLAConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    decoder: DiTConfig = field(default_factory=DiTConfig)
    num_flow_steps: int = 10
    time_beta: tuple[float, float] = (1.5, 1.0)
    #: which backbone outputs the decoder cross-attends to: "user_turn" (the camera tokens and the
    #: instruction; the system prompt reaches them through the backbone's causal attention) or
    #: "all" (also the ~250 constant tokens of the embodiment prompt, which drown the few image
    #: tokens that show a small target: attention starts uniform). Configs and checkpoints that do
    #: not say read "all", the only behaviour before the option existed.
    decoder_reads: str = "user_turn"

    @classmethod
    def from_dict(cls, raw: dict) -> "VLAConfig":
        raw = dict(raw)
        raw.setdefault("decoder_reads", "all")
        if raw["decoder_reads"] not in ("user_turn", "all"):
            raise ConfigError(f"decoder_reads must be 'user_turn' or 'all', got {raw['decoder_reads']!r}")
        backbone = BackboneConfig(**raw.pop("backbone", {}))
        backbone.image_size = tuple(backbone.image_size)
        decoder = DiTConfig(**raw.pop("decoder", {}))
        if "time_beta" in raw:
            raw["time_beta"] = tuple(raw["time_beta"])
        return cls(backbone=backbone, decoder=decoder, **raw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_model_config(name_or_path: str, overrides: dict | None = None) -> VLAConfig:
    """A preset name under ``configs/model/`` (``tiny``, ``full``) or a YAML path, plus overrides."""
    path = Path(name_or_path)
    if not path.suffix:
        path = MODEL_CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        presets = sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.yaml"))
        raise ConfigNotFoundError(f"model config '{name_or_path}' not found: expected one of {presets} "
                                  f"or a path to a YAML file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"model config {path}: invalid YAML: {yaml_problem(err)}") from None
    for section, values in (overrides or {}).items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    return VLAConfig.from_dict(raw)


def flow_matching_loss(velocity, actions: torch.Tensor, time_mask: torch.Tensor, dim_mask: torch.Tensor,
                       time_beta=(1.5, 1.0)) -> torch.Tensor:
    """Masked flow-matching loss for normalized ``actions [B,H,D]`` with ``time_mask [B,H]`` and
    ``dim_mask [B,D]``: draws ``t ~ Beta(*time_beta)`` per sample and the noise, and compares
    ``velocity(x_t, t) [B,H,D]`` with ``noise - actions`` on the unmasked entries."""
    b = actions.shape[0]
    mask = time_mask.to(actions.dtype)[:, :, None] * dim_mask.to(actions.dtype)[:, None, :]
    a, bb = time_beta
    t = torch.distributions.Beta(a, bb).sample((b,)).to(actions.device) * 0.999 + 0.001
    noise = torch.randn_like(actions)
    x_t = (t[:, None, None] * noise + (1 - t[:, None, None]) * actions) * mask
    err = (velocity(x_t, t) - (noise - actions)) ** 2 * mask
    return err.sum() / mask.sum().clamp(min=1)


def euler_integrate(velocity, x: torch.Tensor, mask: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Integrate the flow from t=1 (noise ``x [B,H,D]``) to t=0 in ``num_steps`` Euler steps;
    ``mask [B,1,D]`` keeps padded dimensions at zero throughout."""
    x = x * mask
    dt = -1.0 / num_steps
    for i in range(num_steps):
        t = torch.full((x.shape[0],), 1.0 + i * dt, device=x.device, dtype=x.dtype)
        x = (x + dt * velocity(x, t)) * mask
    return x


@dataclass
class Prefix:
    """What one observation batch contributes to decoding: per-block cross K/V and the key mask."""
    cross_kv: list[tuple[torch.Tensor, torch.Tensor]]
    mask: torch.Tensor  # [B, L] bool
    cond: torch.Tensor | None = None  # [B, hidden]: the image readout's conditioning (DiT)
    motion: torch.Tensor | None = None  # [B, 2*hidden + 1]: the motion adapter's output and gate (DiT)



class VLA(nn.Module):
    def __init__(self, config: VLAConfig, hf_config=None, load_backbone_weights: bool = True):
        super().__init__()
        self.config = config
        self.backbone = Backbone(config.backbone, hf_config=hf_config, load_weights=load_backbone_weights)
        config.decoder.prefix_dim = self.backbone.hidden_size
        self.decoder = DiT(config.decoder)

    # ---- the two halves ----------------------------------------------------------------------
    def encode(self, batch: dict, motion: torch.Tensor | None = None) -> Prefix:
        """Backbone once, then the decoder's cross-attention K/V once (``motion``: the motion adapter's
        output when the caller has it already)."""
        prefix = self.backbone(batch["input_ids"], batch["attention_mask"], batch["pixel_values"],
                               batch["image_grid_thw"])
        kv, cond = self.decoder.encode_prefix(prefix, self.image_mask(batch))
        return Prefix(kv, self.decoder_mask(batch), cond, self.motion(batch) if motion is None else motion)

    def motion(self, batch: dict, with_trajectory: bool = False):
        """The motion adapter's ``[B, 2*hidden + 1]`` for a collated batch (None without one);
        ``with_trajectory``: also its head's chunk (``DiT.motion_features``)."""
        return self.decoder.motion_features(batch.get("motion_frames"), batch.get("motion_gate"), with_trajectory)

    def image_mask(self, batch: dict) -> torch.Tensor | None:
        """``[B, L]`` bool marking the camera tokens the decoder's image readout reads (None when the
        decoder has no readout). Raises if an observation has more camera tokens than the readout."""
        slots = self.config.decoder.image_readout
        if slots <= 0:
            return None
        mask = batch["input_ids"] == self.backbone.model.config.image_token_id
        most = int(mask.sum(1).max()) if mask.numel() else 0
        if most > slots:
            raise ValueError(f"an observation has {most} camera tokens but the decoder's image readout reads "
                             f"{slots} (decoder.image_readout in the model config): use fewer or smaller "
                             f"cameras, or a model with a larger image_readout")
        return mask

    def decoder_mask(self, batch: dict) -> torch.Tensor:
        """``[B, L]`` bool: the backbone outputs the decoder reads (``config.decoder_reads``)."""
        if self.config.decoder_reads == "all":
            return batch["attention_mask"].bool()
        if "user_mask" not in batch:
            raise KeyError("this model's decoder reads the user turn (decoder_reads: user_turn) but the batch has "
                           "no 'user_mask'; build batches with VLAProcessor.collate")
        return batch["user_mask"].bool()

    def velocity(self, x_t, t, batch, prefix: Prefix, time_mask=None):
        return self.decoder(x_t, t, batch["state"], batch["state_mask"], batch["dim_mask"],
                            prefix.cross_kv, prefix.mask, time_mask, prefix.cond, prefix.motion)

    # ---- training ----------------------------------------------------------------------------
    def loss(self, batch: dict) -> torch.Tensor:
        """Masked flow-matching loss (plus the motion head's, :meth:`loss_terms`). ``batch["actions"]
        [B,H,D]`` normalized, ``time_mask [B,H]``, ``dim_mask [B,D]``."""
        return sum(self.loss_terms(batch).values())

    def loss_terms(self, batch: dict) -> dict[str, torch.Tensor]:
        """``{"flow": ...}``, and with a motion adapter ``"motion"``: its head's mean squared error to the
        normalized chunk on its slots, over the samples it is gated on, times ``motion_loss_weight``."""
        cfg, motion, terms = self.config.decoder, None, {}
        if cfg.motion_adapter:
            motion, trajectory = self.motion(batch, with_trajectory=True)
            h = min(cfg.motion_horizon, batch["actions"].shape[1])
            target = batch["actions"][:, :h, self.decoder.motion_slot_index]
            mask = (batch["motion_gate"][:, None, None] * batch["time_mask"][:, :h, None]
                    * batch["dim_mask"][:, None, self.decoder.motion_slot_index]).to(target.dtype)
            err = ((trajectory[:, :h] - target) ** 2 * mask).sum() / mask.sum().clamp(min=1)
            terms["motion"] = cfg.motion_loss_weight * err
        prefix = self.encode(batch, motion)
        terms["flow"] = flow_matching_loss(
            lambda x_t, t: self.velocity(x_t, t, batch, prefix, batch["time_mask"]),
            batch["actions"], batch["time_mask"], batch["dim_mask"], self.config.time_beta)
        return terms

    # ---- inference ---------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, batch: dict, horizon: int, num_samples: int = 1, num_steps: int | None = None,
               generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
               cache: bool = True) -> torch.Tensor:
        """Normalized chunks ``[B, K, horizon, D]`` (padded dims are 0).

        ``cache=False`` recomputes the backbone and the cross K/V at every Euler step: the
        baseline the benchmark compares the cached path against.
        """
        n = num_steps or self.config.num_flow_steps
        b = batch["input_ids"].shape[0]
        d = self.config.decoder.action_dim
        k = num_samples
        if noise is None:
            noise = torch.randn((b, k, horizon, d), generator=generator, device=batch["input_ids"].device)
        rep = {key: batch[key].repeat_interleave(k, 0) for key in ("state", "state_mask", "dim_mask")}
        mask = rep["dim_mask"].to(noise.dtype)[:, None, :]
        # candidates share their observation's prefix: the decoder folds them, nothing is copied
        prefix = self.encode(batch) if cache else None

        def velocity(x, t):
            return self.velocity(x, t, rep, prefix if cache else self.encode(batch))

        return euler_integrate(velocity, noise.reshape(b * k, horizon, d), mask, n).reshape(b, k, horizon, d)

    # ---- checkpoints -------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # model_type: what the transformers Auto classes dispatch on (components/hf.py)
        config = {"model_type": "vla_stack", "vla": self.config.to_dict(),
                  "backbone_hf_config": self.backbone.model.config.to_dict(), **(extra or {})}
        (directory / "config.json").write_text(json.dumps(config, indent=2, default=list))
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> tuple["VLA", dict]:
        """The model of checkpoint ``directory`` and its ``config.json``; a missing, truncated or
        edited file is a CheckpointError naming it."""
        directory = require_files(directory, ("config.json", "model.safetensors"))
        cfg_path = directory / "config.json"
        with reading(cfg_path, "the model configuration"):
            raw = json.loads(cfg_path.read_text())
            config = VLAConfig.from_dict(raw["vla"])
            hf = dict(raw["backbone_hf_config"])
            from transformers import AutoConfig
            hf_config = AutoConfig.for_model(hf.pop("model_type"), **hf)
        model = cls(config, hf_config=hf_config, load_backbone_weights=False)
        weights = directory / "model.safetensors"
        with reading(weights, "the model weights"):
            state = load_file(str(weights))
            missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{weights} does not match config.json: missing {missing[:5]}, unexpected "
                                  f"{unexpected[:5]}; the two files come from different checkpoints; {RECOVER}")
        return model.eval(), raw
