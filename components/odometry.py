"""Motion history from frames: the `video` embodiment's ego-motion (docs/ARCHITECTURE.md, "Trajectory
prediction on video").

A video has no proprioception, so its motion has to come from its pixels. :class:`MotionHistory` (the
decoder's ``motion_history``, ``DiTConfig``) reads a clip of ``pairs + 1`` frames ``stride`` control steps
apart, oldest first:

1. a small CNN estimates the camera's planar motion between each two neighbouring frames (visual odometry:
   the older frame's pose ``(x_forward, y_left, yaw)`` in the newer one's ground frame);
2. the estimates are chained into the pose history of the last ``pairs * stride`` steps in the current
   ground frame;
3. an MLP maps that history (at the lags in :data:`LAGS`) to the future waypoints.

Both outputs are trained with direct losses (the true relative poses, the true future), which is what the
flow decoder fed the two frames of stage 12a did not learn: the camera's current speed (docs/RESULTS.md).
Frames the video does not have (before its first frame) are marked invalid and contribute no motion.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

#: pair counts back from the current frame whose chained pose the MLP reads
LAGS = (1, 2, 3, 4, 5, 7, 10, 13, 15, 20)


def clip_steps(pairs: int, stride: int) -> np.ndarray:
    """Control steps back from a clip's newest frame to each of its ``pairs + 1`` frames, oldest first: the
    clip geometry training (components/motion_training.py) and streaming (components/trajectory.py) share."""
    return stride * np.arange(pairs, -1, -1)


def strided_cnn(cin: int, widths: tuple[int, ...], size: tuple[int, int]) -> tuple[nn.Sequential, int]:
    """Stride-2 convolutions (kernel 5, then 3) with GroupNorm and SiLU, and the number of features of their
    flattened output for inputs of ``size`` (height, width)."""
    layers, (h, w) = [], size
    for i, cout in enumerate(widths):
        k = 5 if i == 0 else 3
        layers += [nn.Conv2d(cin, cout, k, stride=2, padding=k // 2), nn.GroupNorm(8, cout), nn.SiLU()]
        cin, h, w = cout, (h + 1) // 2, (w + 1) // 2
    return nn.Sequential(*layers), cin * h * w


def compose(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Planar poses ``[..., 3]`` (x, y, yaw): ``b`` given in the frame of ``a``, expressed in ``a``'s parent."""
    c, s = torch.cos(a[..., 2]), torch.sin(a[..., 2])
    return torch.stack([a[..., 0] + c * b[..., 0] - s * b[..., 1], a[..., 1] + s * b[..., 0] + c * b[..., 1],
                        a[..., 2] + b[..., 2]], dim=-1)


class MotionHistory(nn.Module):
    """``clip`` uint8 ``[B, pairs + 1, 3, h, w]`` (oldest first, ``stride`` control steps apart) and ``valid`` bool ``[B, pairs + 1]`` ->
    waypoints ``[B, horizon, 4]`` (x_forward_m, y_left_m, cos, sin in the newest frame's ground frame) and
    the odometry ``[B, pairs, 3]`` of each neighbouring pair (normalized by ``pair_scale``)."""

    def __init__(self, pairs: int, size: tuple[int, int], channels: int, horizon: int, hidden: int = 256,
                 stride: int = 2):
        super().__init__()
        self.pairs, self.size, self.horizon, self.stride = pairs, tuple(size), horizon, stride
        self.lags = tuple(k for k in LAGS if k <= pairs)
        c = channels
        self.cnn, features = strided_cnn(9, (c, 2 * c, 2 * c, 4 * c), self.size)  # older, newer, newer - older
        self.odometry_head = nn.Sequential(nn.Flatten(), nn.Linear(features, hidden), nn.SiLU(), nn.Linear(hidden, 3))
        self.mlp = nn.Sequential(nn.Linear(5 * len(self.lags), hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 3 * horizon))
        # typical size of one pair's (x, y, yaw): set from the training data before training (MotionHistoryModule)
        self.register_buffer("pair_scale", torch.tensor([0.04, 0.005, 0.1]))

    def odometry(self, older: torch.Tensor, newer: torch.Tensor) -> torch.Tensor:
        """uint8 ``[N, 3, h, w]`` twice -> ``[N, 3]``: the older frame's pose in the newer one's, normalized."""
        a = older.to(self.pair_scale.dtype) / 127.5 - 1.0
        b = newer.to(self.pair_scale.dtype) / 127.5 - 1.0
        return self.odometry_head(self.cnn(torch.cat([a, b, b - a], dim=1)))

    def history(self, pair_poses: torch.Tensor) -> torch.Tensor:
        """``[B, pairs, 3]`` relative poses (metres, radians; oldest first) -> MLP input ``[B, 5 * len(lags)]``:
        the chained pose ``pairs`` back (x, y, cos, sin) and whether the clip reaches that far."""
        cur = torch.zeros_like(pair_poses[:, 0])
        feats = []
        for k in range(1, self.pairs + 1):
            cur = compose(cur, pair_poses[:, self.pairs - k])
            if k in self.lags:
                feats.append(torch.stack([cur[:, 0], cur[:, 1], torch.cos(cur[:, 2]), torch.sin(cur[:, 2])], dim=1))
        return torch.cat(feats, dim=1)

    def forward(self, clip: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n = clip.shape[:2]
        if n != self.pairs + 1:
            raise ValueError(f"motion history: the clip has {n} frames, this model reads {self.pairs + 1}")
        older, newer = clip[:, :-1].flatten(0, 1), clip[:, 1:].flatten(0, 1)
        odometry = self.odometry(older, newer).view(b, self.pairs, 3)
        return self.waypoints(odometry, valid), odometry

    def waypoints(self, odometry: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The pairs' normalized odometry ``[B, pairs, 3]`` and the clip's ``valid`` ``[B, pairs + 1]`` -> waypoints
        ``[B, horizon, 4]`` (a stream computes each pair's odometry once and reuses it: components/trajectory.py)."""
        b = len(odometry)
        pair_valid = valid[:, :-1].to(odometry.dtype)[..., None]  # a pair moves only if its older frame exists
        # the odometry learns from the pairs' true motion only, the MLP from the waypoints: trained end to end,
        # the waypoint loss pulled the odometry off (heldout ADE 0.343 m against 0.315 m kept apart; docs/RESULTS.md)
        hist = self.history(odometry.detach() * self.pair_scale * pair_valid)
        reach = valid[:, [self.pairs - k for k in self.lags]].to(odometry.dtype)
        out = self.mlp(torch.cat([hist.view(b, len(self.lags), 4), reach[..., None]], dim=2).flatten(1))
        out = out.view(b, self.horizon, 3)
        return torch.cat([out[..., :2], torch.cos(out[..., 2:]), torch.sin(out[..., 2:])], dim=-1)
