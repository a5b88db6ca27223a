"""Quantile normalization of actions and states, and the ``norm_stats.json`` file.

Values are mapped so that the 1st..99th percentile of the training data spans -1..1.
Dimensions outside the embodiment's dimension mask carry no data: they are never used in
the quantiles and normalize (and unnormalize) to 0.

``norm_stats.json`` travels with the checkpoint; its sha256 is recorded in ``config.json``
and checked on load, so a model cannot be served with another checkpoint's statistics.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from components.errors import CheckpointError, CheckpointNotFoundError

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


@dataclass
class NormStats:
    """Per-dimension statistics of one quantity (action or state) of one embodiment.

    ``q01``, ``q99``: float64 [D] quantiles (-1 and 1 where ``mask`` is False);
    ``mask``: bool [D], True on dimensions that carry data; ``count``: frames seen.
    """

    q01: np.ndarray
    q99: np.ndarray
    mask: np.ndarray
    count: int

    def __post_init__(self):
        self.q01 = np.asarray(self.q01, dtype=np.float64)
        self.q99 = np.asarray(self.q99, dtype=np.float64)
        self.mask = np.asarray(self.mask, dtype=bool)
        shapes = {self.q01.shape, self.q99.shape, self.mask.shape}
        if len(shapes) != 1 or self.mask.ndim != 1:
            raise ValueError(
                f"q01, q99 and mask must share one shape [D], got {self.q01.shape}, "
                f"{self.q99.shape}, {self.mask.shape}"
            )
        if np.any(self.q99[self.mask] <= self.q01[self.mask]):
            raise ValueError("q99 must exceed q01 on every masked-in dimension")

    @property
    def dim(self) -> int:
        return len(self.mask)

    def normalize(self, x: ArrayT) -> ArrayT:
        """``x [..., D]`` -> ``[..., D]`` with q01..q99 mapped to -1..1; masked-out dims 0."""
        q01, q99, mask = self._like(x)
        y = (x - q01) / (q99 - q01) * 2 - 1
        return _zero_where_not(mask, y)

    def unnormalize(self, y: ArrayT) -> ArrayT:
        """Inverse of :meth:`normalize` on masked-in dims; masked-out dims are 0."""
        q01, q99, mask = self._like(y)
        x = (y + 1) / 2 * (q99 - q01) + q01
        return _zero_where_not(mask, x)

    def _like(self, x: ArrayT) -> tuple[ArrayT, ArrayT, ArrayT]:
        """Statistics in the type, dtype and device of ``x``."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"expected [..., {self.dim}] values, got shape {tuple(x.shape)}")
        if isinstance(x, torch.Tensor):
            dtype = x.dtype if x.is_floating_point() else torch.float32
            return (
                torch.as_tensor(self.q01, dtype=dtype, device=x.device),
                torch.as_tensor(self.q99, dtype=dtype, device=x.device),
                torch.as_tensor(self.mask, device=x.device),
            )
        x = np.asarray(x)
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
        return self.q01.astype(dtype), self.q99.astype(dtype), self.mask

    def to_dict(self) -> dict:
        return {
            "q01": self.q01.tolist(),
            "q99": self.q99.tolist(),
            "mask": self.mask.tolist(),
            "count": int(self.count),
        }

    @classmethod
    def from_dict(cls, d: dict) -> NormStats:
        return cls(q01=d["q01"], q99=d["q99"], mask=d["mask"], count=int(d["count"]))


def _zero_where_not(mask, values):
    if isinstance(values, torch.Tensor):
        return torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return np.where(mask, values, np.zeros((), dtype=values.dtype))


def compute_stats(values: np.ndarray, mask: np.ndarray, floor: float = 1e-2) -> NormStats:
    """Quantile statistics of ``values [N, D]`` over the dims where ``mask [D]`` is True.

    Where q99 - q01 < ``floor`` (e.g. a constant dimension) the range is widened
    symmetrically around its centre to ``floor``, so normalizing never divides by ~0.
    """
    values = np.asarray(values, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if values.ndim != 2 or mask.shape != (values.shape[1],) or len(values) == 0:
        raise ValueError(
            f"compute_stats needs values [N>0, D] and mask [D], got {values.shape} and {mask.shape}"
        )
    if floor <= 0:
        raise ValueError(f"floor must be positive, got {floor}")
    used = values[:, mask]
    finite = np.isfinite(used).all(axis=1)
    if not finite.all():
        raise ValueError(
            "compute_stats: non-finite value in a masked-in dimension at row "
            f"{int(np.argmin(finite))}"
        )
    q01 = np.full(mask.shape, -1.0)
    q99 = np.full(mask.shape, 1.0)
    if used.shape[1]:
        lo, hi = np.quantile(used, [0.01, 0.99], axis=0)
        narrow = hi - lo < floor
        centre = (lo + hi) / 2
        lo = np.where(narrow, centre - floor / 2, lo)
        hi = np.where(narrow, centre + floor / 2, hi)
        q01[mask], q99[mask] = lo, hi
    return NormStats(q01=q01, q99=q99, mask=mask, count=len(values))


def stats_digest(stats_json_text: str) -> str:
    """sha256 hex digest of the exact text of a ``norm_stats.json``."""
    return hashlib.sha256(stats_json_text.encode("utf-8")).hexdigest()


def save_stats(path: str | Path, stats: dict[str, dict[str, NormStats]]) -> str:
    """Write ``{name: {"action": NormStats, "state": NormStats}}`` as JSON to the file ``path``.

    ``name`` is an embodiment or dataset name. Keys are sorted and indented by 2, so equal
    statistics give equal text. Returns the sha256 digest of the written text.
    """
    text = json.dumps(
        {name: {key: s.to_dict() for key, s in by_key.items()} for name, by_key in stats.items()},
        sort_keys=True,
        indent=2,
    ) + "\n"
    Path(path).write_bytes(text.encode("utf-8"))
    return stats_digest(text)


def load_stats(
    path: str | Path, expected_sha256: str | None = None
) -> dict[str, dict[str, NormStats]]:
    """Read a file written by :func:`save_stats`, checking its digest when one is expected.

    A missing, edited or unparsable file is a CheckpointError naming it and saying what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"{path}: no normalization statistics file there (written by "
                                      "`vla-stack stats` or with the checkpoint)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{path}: not a normalization statistics file (not UTF-8 text: {err})") from None
    if expected_sha256 is not None:
        actual = stats_digest(text)
        if actual != expected_sha256:
            raise CheckpointError(
                f"{path}: sha256 is {actual}, expected {expected_sha256} (norm_stats_sha256 in config.json); "
                "norm_stats.json was modified or belongs to another checkpoint: restore the file exported "
                "with these weights, or export the checkpoint again"
            )
    try:
        raw = json.loads(text)
        return {
            name: {key: NormStats.from_dict(d) for key, d in by_key.items()}
            for name, by_key in raw.items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        detail = f"no field {err.args[0]!r}" if isinstance(err, KeyError) else f"{type(err).__name__}: {err}"
        raise CheckpointError(
            f"{path}: not a normalization statistics file ({detail}); expected "
            "{name: {action|state: {q01, q99, mask, count}}} as `vla-stack stats` writes it"
        ) from None
