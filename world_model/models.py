"""The two action-conditioned latent video transformers of the world model (docs/ARCHITECTURE.md, "World model").

Both are diffusers ``ModelMixin + ConfigMixin`` models with one call signature, so the pipeline and
training do not know which one they hold::

    model(noisy [B, F, C, h, w], context [B, Fc, C, h, w], actions [B, H_max, D], time_mask [B, H_max],
          dim_mask [B, D], embodiment [B] long, t [B] in [0, 1]) -> velocity [B, F, C, h, w]

``actions`` are canonical chunks normalized to [-1, 1] by the embodiment's declared slot ranges
(:func:`canonical_actions`); masked entries are zero and the masks travel with them.
``LatentVideoDiT`` is the project's own; ``WanWorldTransformer`` wraps a stock diffusers
``WanTransformer3DModel`` whose cross-attention input (``encoder_hidden_states``) carries the action
tokens, so a larger Wan transformer can be put in its place (:meth:`WanWorldTransformer.from_backbone`).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from diffusers import ModelMixin, WanTransformer3DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn

from components import action_space
from components.embodiment import EmbodimentSpec


def canonical_actions(chunks: np.ndarray, spec: EmbodimentSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Robot-unit chunks ``[K, H, A]`` → ``(actions [K, H_max, D], time_mask [K, H_max], dim_mask [K, D])``,
    each slot scaled to [-1, 1] by the low/high its spec declares (the spec is the single source)."""
    chunks = np.asarray(chunks, dtype=np.float32)
    spec.check_width("action", chunks.shape[-1], f"chunks for embodiment '{spec.name}'")
    low = np.array([s.low for s in spec.action_slots], dtype=np.float32)
    high = np.array([s.high for s in spec.action_slots], dtype=np.float32)
    scaled = np.clip(2.0 * (chunks - low) / (high - low) - 1.0, -1.0, 1.0)
    k, h = chunks.shape[:2]
    horizon = min(h, action_space.MAX_HORIZON)
    actions = np.zeros((k, action_space.MAX_HORIZON, action_space.ACTION_DIM), dtype=np.float32)
    actions[:, :horizon] = action_space.pad(scaled[:, :horizon], spec.action_indices)
    time_mask = np.zeros((k, action_space.MAX_HORIZON), dtype=bool)
    time_mask[:, :horizon] = True
    return actions, time_mask, np.repeat(spec.action_mask[None], k, axis=0)


def without_actions(actions: torch.Tensor, dim_mask: torch.Tensor,
                    blank: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The "no action" input of action dropout and action guidance: chunk and dim mask zero where ``blank``
    ``[B]`` is true (every item when it is None); the time mask is kept, so padding stays padding."""
    keep = torch.zeros(actions.shape[0], dtype=torch.bool, device=actions.device) if blank is None else ~blank
    return actions * keep[:, None, None].to(actions.dtype), dim_mask * keep[:, None].to(dim_mask.dtype)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding ``[B, dim]`` of flow times ``t [B]`` in [0, 1]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ActionTokens(nn.Module):
    """Canonical chunk ``[B, H_max, D]`` + masks → one token per time step ``[B, H_max, dim]`` (the dim mask
    is an input, so the same value in an unused slot and a used one differ), plus a learned time position."""

    def __init__(self, action_dim: int, horizon: int, dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(2 * action_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.pos = nn.Parameter(torch.zeros(1, horizon, dim))
        self.pad = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, actions, time_mask, dim_mask):
        mask = dim_mask[:, None, :].to(actions.dtype).expand_as(actions)
        tokens = self.proj(torch.cat([actions * mask, mask], dim=-1)) + self.pos[:, : actions.shape[1]]
        return torch.where(time_mask[..., None], tokens, self.pad.to(tokens.dtype))


def _patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """``[B, F, C, h, w]`` → ``[B, F * (h/p) * (w/p), C * p * p]``."""
    b, f, c, h, w = x.shape
    x = x.reshape(b, f, c, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4, 6)
    return x.reshape(b, f * (h // p) * (w // p), c * p * p)


def _unpatchify(x: torch.Tensor, f: int, c: int, h: int, w: int, p: int) -> torch.Tensor:
    b = x.shape[0]
    x = x.reshape(b, f, h // p, w // p, c, p, p).permute(0, 1, 4, 2, 5, 3, 6)
    return x.reshape(b, f, c, h, w)


class _Block(nn.Module):
    """adaLN-Zero transformer block: self-attention over frame and action tokens, then an MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x, cond, key_padding_mask):
        s1, b1, g1, s2, b2, g2 = self.ada(cond)[:, None].chunk(6, dim=-1)
        h = self.norm1(x) * (1 + s1) + b1
        x = x + g1 * self.attn(h, h, h, key_padding_mask=key_padding_mask, need_weights=False)[0]
        h = self.norm2(x) * (1 + s2) + b2
        return x + g2 * self.mlp(h)


class LatentVideoDiT(ModelMixin, ConfigMixin):
    """The project's latent video DiT: patch tokens of the context and the noisy future frames (each
    with a learned frame and spatial position) and one token per action step attend jointly; the flow
    time and the embodiment enter through adaLN-Zero; padded action steps are masked out of attention."""

    @register_to_config
    def __init__(self, latent_channels: int = 4, latent_height: int = 6, latent_width: int = 16,
                 context_frames: int = 2, num_frames: int = 4, patch_size: int = 1, dim: int = 128,
                 depth: int = 4, heads: int = 4, mlp_ratio: float = 2.0,
                 action_dim: int = action_space.ACTION_DIM, horizon: int = action_space.MAX_HORIZON,
                 num_embodiments: int = 8):
        super().__init__()
        p = patch_size
        if latent_height % p or latent_width % p:
            raise ValueError(f"latent size {latent_height}x{latent_width} is not divisible by patch_size {p}")
        self.tokens_per_frame = (latent_height // p) * (latent_width // p)
        self.patch_in = nn.Linear(latent_channels * p * p, dim)
        self.frame_pos = nn.Parameter(torch.zeros(1, context_frames + num_frames, 1, dim))
        self.space_pos = nn.Parameter(torch.zeros(1, 1, self.tokens_per_frame, dim))
        self.actions = ActionTokens(action_dim, horizon, dim)
        self.embodiment = nn.Embedding(num_embodiments, dim)
        self.time = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.blocks = nn.ModuleList([_Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm_out = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(dim, 2 * dim)
        self.patch_out = nn.Linear(dim, latent_channels * p * p)
        for param in (self.frame_pos, self.space_pos):
            nn.init.normal_(param, std=0.02)
        for layer in (self.ada_out, self.patch_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, noisy, context, actions, time_mask, dim_mask, embodiment, t):
        cfg = self.config
        b, f, c, h, w = noisy.shape
        used = int(time_mask.any(0).nonzero().max()) + 1 if time_mask.any() else 1
        actions, time_mask = actions[:, :used], time_mask[:, :used]  # steps padded in every item: masked anyway
        frames = torch.cat([context, noisy], dim=1)
        x = self.patch_in(_patchify(frames, cfg.patch_size)).reshape(b, frames.shape[1], self.tokens_per_frame, -1)
        x = (x + self.frame_pos[:, : frames.shape[1]] + self.space_pos).flatten(1, 2)
        tokens = torch.cat([x, self.actions(actions, time_mask, dim_mask)], dim=1)
        pad = torch.cat([torch.zeros(b, x.shape[1], dtype=torch.bool, device=x.device), ~time_mask], dim=1)
        cond = self.time(timestep_embedding(t, cfg.dim)) + self.embodiment(embodiment)
        for block in self.blocks:
            tokens = block(tokens, cond, pad)
        shift, scale = self.ada_out(cond)[:, None].chunk(2, dim=-1)
        future = tokens[:, context.shape[1] * self.tokens_per_frame: x.shape[1]]
        out = self.patch_out(self.norm_out(future) * (1 + scale) + shift)
        return _unpatchify(out, f, c, h, w, cfg.patch_size)


class WanWorldTransformer(ModelMixin, ConfigMixin):
    """A stock diffusers ``WanTransformer3DModel`` as the world model: context and noisy future latents
    are one clip along its frame axis (its 3-D RoPE places them in time), the flow time is its timestep,
    and the action tokens plus an embodiment token are its ``encoder_hidden_states`` (cross-attention)."""

    @register_to_config
    def __init__(self, latent_channels: int = 4, context_frames: int = 2, num_frames: int = 4,
                 wan: dict | None = None, action_dim: int = action_space.ACTION_DIM,
                 horizon: int = action_space.MAX_HORIZON, num_embodiments: int = 8):
        super().__init__()
        settings = dict(patch_size=(1, 1, 1), num_attention_heads=2, attention_head_dim=24, text_dim=64,
                        freq_dim=64, ffn_dim=128, num_layers=2, rope_max_seq_len=64)
        settings.update(wan or {})
        settings.update(in_channels=latent_channels, out_channels=latent_channels)
        self.backbone = WanTransformer3DModel(**settings)
        text_dim = self.backbone.config.text_dim
        self.actions = ActionTokens(action_dim, horizon, text_dim)
        self.embodiment = nn.Embedding(num_embodiments, text_dim)

    @classmethod
    def from_backbone(cls, backbone: WanTransformer3DModel, context_frames: int = 2, num_frames: int = 4,
                      num_embodiments: int = 8) -> "WanWorldTransformer":
        """Wrap given (e.g. pretrained, larger) Wan transformer weights; the action encoder starts fresh."""
        cfg = {k: v for k, v in backbone.config.items() if not k.startswith("_")}
        model = cls(latent_channels=cfg["in_channels"], context_frames=context_frames, num_frames=num_frames,
                    wan={k: v for k, v in cfg.items() if k not in ("in_channels", "out_channels")},
                    num_embodiments=num_embodiments)
        model.backbone.load_state_dict(backbone.state_dict())
        return model

    def forward(self, noisy, context, actions, time_mask, dim_mask, embodiment, t):
        clip = torch.cat([context, noisy], dim=1).permute(0, 2, 1, 3, 4)  # [B, C, Fc + F, h, w]
        condition = torch.cat([self.embodiment(embodiment)[:, None], self.actions(actions, time_mask, dim_mask)], 1)
        out = self.backbone(clip, timestep=t * 1000.0, encoder_hidden_states=condition, return_dict=False)[0]
        return out.permute(0, 2, 1, 3, 4)[:, context.shape[1]:]


ARCHITECTURES = {"dit": LatentVideoDiT, "wan": WanWorldTransformer}
