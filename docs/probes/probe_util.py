"""Helpers shared by the probes in this folder (run them from the repo root; Python puts this
folder on the path, so ``from probe_util import ...`` works)."""
import numpy as np
import torch
from components.vla import euler_integrate


def first_chunk(velocity, dim_mask: torch.Tensor, horizon: int = 10, steps: int = 10) -> torch.Tensor:
    """One normalized chunk ``[horizon, D]`` integrated from noise seed 0 with ``velocity(x_t, t)``."""
    x = torch.randn((1, horizon, dim_mask.shape[-1]), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return euler_integrate(velocity, x, dim_mask.float()[:, None, :], steps)[0]


def direction_cosine(chunk, expert_action) -> float:
    """Cosine between the mean (dx, dy, dz) of a chunk's first three actions (robot units) and the
    expert's first action."""
    m = np.asarray(chunk)[:3, :3].mean(0)
    a = np.asarray(expert_action)[:3]
    return float(m @ a / (np.linalg.norm(m) * np.linalg.norm(a) + 1e-9))
