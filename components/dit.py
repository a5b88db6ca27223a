"""The DiT flow-matching action decoder.

Tokens: one state token followed by H action tokens. Each block conditions on the flow time with
adaLN-Zero (shift, scale and gate for self-attention, cross-attention and MLP), lets the tokens
attend to each other, then cross-attends to the backbone prefix. The cross-attention keys/values
depend only on the prefix, so ``encode_prefix`` computes them once per sampling call and every Euler
step reuses them (lifetime: one ``VLA.sample`` call).

Image readout (``image_readout: R > 0``): the first R camera tokens of the prefix, each projected to
``readout_dim`` numbers, are laid side by side in their order (zero-padded) and an MLP maps them to a
vector added to the flow-time conditioning of every block. Cross-attention is a weighted average
over tokens, so it must find *where* a small object is from the token contents alone; the readout
keeps each camera token in its own slot, so position is explicit. Its last layer keeps PyTorch's
default initialization: started at zero (adaLN-Zero style) it did not learn (docs/history.md, Stage 4).

Slot adapter (``slot_adapter``: canonical state slots, e.g. a subgoal's): an MLP of those slots' state
values adds to the state token and to the conditioning of every block, multiplied by whether the sample's
state has those slots (its state mask). A sample without them gets exactly what a decoder without the
adapter gives, so an adapter trained alone adds a state input to a trained decoder without changing any
other embodiment's actions (GR00T keeps embodiment-specific state encoders for the same reason).

Motion adapter (``motion_adapter``: camera names, e.g. ``[front, past]`` of the ``video`` embodiment): a
small CNN over those cameras' raw frames at ``motion_size`` and their differences, for samples whose
embodiment has all of these cameras (the processor's ``motion_gate``). Like the slot adapter it adds to
the state token and to every block's conditioning, starts at zero and is gated, so it can train alone
and leave every other embodiment's actions bit for bit as they were. For its samples it replaces the
image readout's conditioning (which, fed two cameras where the wheeled base has one, swamped the
decoder: flow loss ~100 against ~1) with its own. A linear head on its features regresses the chunk's
waypoints directly (``VLA.loss_terms``: ``motion``), a gradient for the CNN that does not have to pass
through the frozen decoder. It sees pixels the 16-pixel patch tokens of the tiny backbone blur away:
how far the scene moved between the two frames.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from components.action_space import ACTION_DIM, MAX_HORIZON
from components.odometry import strided_cnn


@dataclass
class DiTConfig:
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    prefix_dim: int = 128  # backbone hidden size; set from the backbone
    action_dim: int = ACTION_DIM
    max_horizon: int = MAX_HORIZON
    image_readout: int = 0  # camera tokens the image readout reads (0: no readout)
    readout_dim: int = 16   # numbers per camera token in the readout
    slot_adapter: tuple[str, ...] = ()  # canonical state slots the slot adapter reads (empty: none)
    slot_adapter_hidden: int = 128
    motion_adapter: tuple[str, ...] = ()  # cameras the motion adapter reads (empty: none)
    motion_size: tuple[int, int] = (45, 80)  # (height, width) its frames are resized to
    motion_channels: int = 32
    motion_slots: tuple[str, ...] = ("wp_x", "wp_y", "wp_cos", "wp_sin")  # canonical slots its head regresses
    motion_horizon: int = 8  # chunk steps its head regresses
    motion_loss_weight: float = 1.0  # of the head's loss, beside the flow loss
    motion_history: int = 0  # frame pairs the motion history reads (components/odometry.py; 0: none)
    motion_history_stride: int = 2  # control steps between its frames
    motion_history_size: tuple[int, int] = (45, 80)  # (height, width) its frames are resized to
    motion_history_channels: int = 32

    def __post_init__(self):
        self.slot_adapter = tuple(self.slot_adapter)
        self.motion_adapter = tuple(self.motion_adapter)
        self.motion_size = tuple(self.motion_size)
        self.motion_slots = tuple(self.motion_slots)
        self.motion_history_size = tuple(self.motion_history_size)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 100.0) -> torch.Tensor:
    """Sinusoidal embedding of flow time ``t [B]`` in [0, 1] -> ``[B, dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * 1000.0 * freqs[None] / max_period * (2 * math.pi)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, cross: bool):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(hidden, hidden)
        self.kv = nn.Linear(hidden, 2 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.cross = cross

    def split(self, x):  # [B, S, hidden] -> [B, heads, S, dh]
        b, s, _ = x.shape
        return x.view(b, s, self.heads, -1).transpose(1, 2)

    def keys_values(self, source):
        k, v = self.kv(source).chunk(2, dim=-1)
        return self.split(k), self.split(v)

    def forward(self, x, kv=None, key_mask=None):
        """``x [B*K,S,h]``; ``kv``: precomputed ``(k, v)`` ``[B,heads,Sk,dh]`` (cross) or None (self);
        ``key_mask [B,Sk]`` bool. When K candidates share one observation's keys (B*K queries, B
        keys), their queries are folded into one sequence instead of copying the keys K times."""
        q = self.split(self.q(x))
        k, v = kv if kv is not None else self.keys_values(x)
        n, heads, s, dh = q.shape
        groups = n // k.shape[0]
        q = q.reshape(k.shape[0], groups, heads, s, dh).transpose(1, 2).reshape(k.shape[0], heads, groups * s, dh)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.reshape(k.shape[0], heads, groups, s, dh).transpose(1, 2).reshape(n, heads, s, dh)
        return self.out(y.transpose(1, 2).reshape(x.shape))


class DiTBlock(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        h = cfg.hidden
        self.norm1 = nn.LayerNorm(h, elementwise_affine=False, eps=1e-6)
        self.self_attn = Attention(h, cfg.heads, cross=False)
        self.norm2 = nn.LayerNorm(h, elementwise_affine=False, eps=1e-6)
        self.cross_attn = Attention(h, cfg.heads, cross=True)
        self.norm3 = nn.LayerNorm(h, elementwise_affine=False, eps=1e-6)
        inner = int(h * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(h, inner), nn.GELU(approximate="tanh"), nn.Linear(inner, h))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(h, 9 * h))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x, c, cross_kv, token_mask, prefix_mask):
        s1, c1, g1, s2, c2, g2, s3, c3, g3 = self.ada(c).chunk(9, dim=-1)
        x = x + g1[:, None] * self.self_attn(modulate(self.norm1(x), s1, c1), key_mask=token_mask)
        x = x + g2[:, None] * self.cross_attn(modulate(self.norm2(x), s2, c2), kv=cross_kv, key_mask=prefix_mask)
        return x + g3[:, None] * self.mlp(modulate(self.norm3(x), s3, c3))


class MotionAdapter(nn.Module):
    """Frames ``[B, n, 3, h, w]`` uint8 -> ``([B, out], [B, trajectory])``: a strided CNN over the n frames
    and the differences of each to the first, flattened (where things moved matters), a feature vector,
    a linear head that regresses the chunk itself (trained with a direct loss, ``VLA.loss_terms``: a clear
    gradient for the CNN that the frozen decoder alone does not give), and the output layer over both,
    which starts at zero."""

    def __init__(self, cameras: int, size: tuple[int, int], channels: int, out: int, trajectory: int):
        super().__init__()
        self.size = tuple(size)
        c = channels
        self.cnn, features = strided_cnn(3 * (2 * cameras - 1), (c, 2 * c, 2 * c, 2 * c), self.size)
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(features, 256), nn.SiLU())
        self.trajectory = nn.Linear(256, trajectory)
        self.out = nn.Linear(256 + trajectory, out)
        nn.init.zeros_(self.out.weight)  # starts as no adapter
        nn.init.zeros_(self.out.bias)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = frames.to(self.out.weight.dtype) / 127.5 - 1.0  # [B, n, 3, h, w]
        x = torch.cat([x, x[:, 1:] - x[:, :1]], dim=1).flatten(1, 2)
        z = self.trunk(self.cnn(x))
        trajectory = self.trajectory(z)
        return self.out(torch.cat([z, trajectory], dim=1)), trajectory


class DiT(nn.Module):
    """Predicts the flow velocity ``v [B, H, D]`` of noisy action chunks ``x_t [B, H, D]``."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        h, d = cfg.hidden, cfg.action_dim
        self.action_in = nn.Linear(2 * d, h)  # [x_t, dim_mask]: the mask is an input too (RDT)
        self.state_in = nn.Linear(2 * d, h)   # [state, state_mask]
        self.pos = nn.Parameter(torch.zeros(1, 1 + cfg.max_horizon, h))
        nn.init.normal_(self.pos, std=0.02)
        self.time_mlp = nn.Sequential(nn.Linear(h, h), nn.SiLU(), nn.Linear(h, h))
        self.prefix_proj = nn.Sequential(nn.Linear(cfg.prefix_dim, h), nn.LayerNorm(h))
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.layers))
        if cfg.image_readout > 0:
            self.readout_proj = nn.Linear(h, cfg.readout_dim)
            self.readout = nn.Sequential(nn.Linear(cfg.image_readout * cfg.readout_dim, h), nn.SiLU(),
                                         nn.Linear(h, h))
            # not zero-initialized like the adaLN layers (module docstring)
        if cfg.slot_adapter:
            from components.action_space import slot_indices
            self.register_buffer("adapter_slots", torch.as_tensor(slot_indices(cfg.slot_adapter)), persistent=False)
            n, a = len(cfg.slot_adapter), cfg.slot_adapter_hidden
            self.slot_adapter = nn.Sequential(nn.Linear(n, a), nn.SiLU(), nn.Linear(a, a), nn.SiLU(), nn.Linear(a, 2 * h))
            nn.init.zeros_(self.slot_adapter[-1].weight)  # starts as no adapter
            nn.init.zeros_(self.slot_adapter[-1].bias)
        if cfg.motion_adapter:
            from components.action_space import slot_indices
            self.register_buffer("motion_slot_index", torch.as_tensor(slot_indices(cfg.motion_slots)), persistent=False)
            self.motion_adapter = MotionAdapter(len(cfg.motion_adapter), cfg.motion_size, cfg.motion_channels, 2 * h,
                                                cfg.motion_horizon * len(cfg.motion_slots))
        if cfg.motion_history:
            from components.odometry import MotionHistory
            # the `video` embodiment's waypoints: not part of the flow network (components/odometry.py)
            self.motion_history = MotionHistory(cfg.motion_history, cfg.motion_history_size,
                                                cfg.motion_history_channels, cfg.motion_horizon,
                                                stride=cfg.motion_history_stride)
        self.final_norm = nn.LayerNorm(h, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(h, 2 * h))
        self.final = nn.Linear(h, d)
        for layer in (self.final_ada[1], self.final):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def encode_prefix(self, prefix: torch.Tensor, image_mask: torch.Tensor | None = None):
        """What the Euler steps reuse: the cross-attention keys/values of every block from
        ``prefix [B, L, prefix_dim]``, and the image readout's conditioning ``[B, hidden]`` (None
        without a readout). ``image_mask [B, L]`` bool marks the camera tokens; the caller checks
        there are at most ``image_readout`` of them (``VLA.image_mask``)."""
        p = self.prefix_proj(prefix)
        kv = [blk.cross_attn.keys_values(p) for blk in self.blocks]
        if self.cfg.image_readout <= 0:
            return kv, None
        if image_mask is None:
            raise ValueError("this decoder has an image readout (image_readout > 0): pass image_mask")
        r = self.cfg.image_readout
        m = image_mask.to(p.dtype)
        slot = (torch.cumsum(m, dim=1) - 1.0) * m - (1.0 - m)  # i-th camera token -> i, others -> -1
        place = (slot[:, :, None] == torch.arange(r, device=p.device, dtype=p.dtype)).to(p.dtype)  # [B,L,R]
        packed = torch.einsum("blr,bld->brd", place, self.readout_proj(p))  # [B, R, readout_dim]
        return kv, self.readout(packed.flatten(1))

    def motion_features(self, frames: torch.Tensor | None, gate: torch.Tensor | None,
                        with_trajectory: bool = False):
        """``[B, 2*hidden + 1]`` from ``frames [B, cameras, 3, h, w]`` uint8 and ``gate [B]`` (1: the sample's
        embodiment has the adapter's cameras): the adapter's output, zero where the gate is 0, then the
        gate; None without a motion adapter. ``with_trajectory``: also its head's regressed chunk
        ``[B, motion_horizon, len(motion_slots)]`` (normalized, for the head's loss)."""
        if not self.cfg.motion_adapter:
            return None
        if frames is None or gate is None:
            raise ValueError("this decoder has a motion adapter (decoder.motion_adapter): the batch needs "
                             "'motion_frames' and 'motion_gate' (VLAProcessor.collate adds them)")
        g = gate.to(self.pos.dtype)[:, None]
        out, trajectory = self.motion_adapter(frames)
        motion = torch.cat([out * g, g], dim=1)
        if with_trajectory:
            return motion, trajectory.reshape(len(out), self.cfg.motion_horizon, len(self.cfg.motion_slots))
        return motion

    def forward(self, x_t, t, state, state_mask, dim_mask, cross_kv, prefix_mask, time_mask=None,
                cond=None, motion=None):
        """``x_t [B*K,H,D]``, ``t [B*K]``, ``state/state_mask/dim_mask [B*K,D]``, ``prefix_mask [B,L]``
        bool, ``time_mask [B*K,H]`` bool or None (all valid), ``cond [B, hidden]`` the image readout's
        conditioning (``encode_prefix``) or None, ``motion [B, 2*hidden + 1]`` the motion adapter's output
        and gate (``motion_features``) or None. Returns ``v [B*K,H,D]``."""
        b, horizon, d = x_t.shape
        dm = dim_mask.to(x_t.dtype)
        act = self.action_in(torch.cat([x_t, dm[:, None].expand(b, horizon, d)], dim=-1))
        st = self.state_in(torch.cat([state, state_mask.to(x_t.dtype)], dim=-1))[:, None]
        extra = None
        if self.cfg.slot_adapter:  # x + 0 is x exactly: samples without the slots are untouched
            gate = state_mask[:, self.adapter_slots].all(dim=-1, keepdim=True).to(x_t.dtype)
            extra = (self.slot_adapter(state[:, self.adapter_slots]) * gate).chunk(2, dim=-1)
            st = st + extra[0][:, None]
        if motion is not None and self.cfg.motion_adapter:  # gated to exactly 0 for other embodiments
            m = motion[:, None].expand(motion.shape[0], b // motion.shape[0], motion.shape[1]).reshape(b, -1)
            m_token, m_cond = m[:, :self.cfg.hidden], m[:, self.cfg.hidden:-1]
            st = st + m_token[:, None]
            extra = (None, m_cond) if extra is None else (extra[0], extra[1] + m_cond)
            if cond is not None:  # the adapter replaces the image readout (x * 1 is x exactly)
                cond = cond * (1.0 - motion[:, -1:])
        x = torch.cat([st, act], dim=1) + self.pos[:, : 1 + horizon]
        token_mask = None
        if time_mask is not None:
            token_mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x.device), time_mask.bool()], dim=1)
        c = self.time_mlp(timestep_embedding(t, self.cfg.hidden).to(x.dtype))
        if cond is not None:  # K candidates per observation share its conditioning
            c = c + cond[:, None].expand(cond.shape[0], b // cond.shape[0], cond.shape[1]).reshape(b, -1)
        if extra is not None:
            c = c + extra[1]
        for blk, kv in zip(self.blocks, cross_kv):
            x = blk(x, c, kv, token_mask, prefix_mask)
        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        return self.final(modulate(self.final_norm(x[:, 1:]), shift, scale))
