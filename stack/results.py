"""Result files of evaluation runs: the Wilson interval, the run-result JSON (docs/ARCHITECTURE.md),
and rollout videos with the instruction, step and outcome written on every frame.

Both files are written atomically (a temporary file in the same directory, then ``os.replace``),
so a killed run never leaves a half-written result or video behind.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

Z_95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; ``(0, 1)`` when ``n == 0``.

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0/n or n/n, which
    are common outcomes of small evaluation runs.
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # at 0/n and n/n one bound is exactly 0 or 1 (the formula leaves a rounding error there)
    lo = 0.0 if successes == 0 else max(0.0, center - half)
    hi = 1.0 if successes == n else min(1.0, center + half)
    return lo, hi


def latency_summary(ms: list[float]) -> dict | None:
    """``{p50, p95}`` in milliseconds, or None if nothing was measured."""
    if not ms:
        return None
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95))}


def _atomic_target(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    return path, Path(tmp)


def write_json(result: dict, path: str | Path) -> Path:
    path, tmp = _atomic_target(path)
    try:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(text: str, path: str | Path) -> Path:
    path, tmp = _atomic_target(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def summary_line(result: dict) -> str:
    """``env: k/N success (rate, 95% CI [lo, hi]), decision p50 X ms``."""
    lo, hi = result["ci95"]
    decision = result["decision_ms"]["p50"] if result["decision_ms"] else float("nan")
    return (f"{result['env']}: {result['successes']}/{result['episodes']} success "
            f"({result['success_rate']:.2f}, 95% CI [{lo:.2f}, {hi:.2f}]), decision p50 {decision:.0f} ms")


MIN_VIDEO_HEIGHT = 240
_BLOCK = 16  # H.264 macro block: frames are padded to multiples of it instead of being resampled


def annotate(frame: np.ndarray, lines: list[str], min_height: int = MIN_VIDEO_HEIGHT) -> np.ndarray:
    """``frame: uint8 [H, W, 3]`` upscaled (nearest, integer factor) to at least ``min_height`` rows,
    with ``lines`` of text in a black band above it; padded to multiples of 16."""
    from PIL import Image, ImageDraw, ImageFont

    frame = np.asarray(frame, dtype=np.uint8)
    scale = max(1, math.ceil(min_height / frame.shape[0]))
    big = np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1)
    font = ImageFont.load_default(size=13)
    line_h = 16
    band = line_h * len(lines) + 4
    h, w = big.shape[0] + band, big.shape[1]
    canvas = Image.new("RGB", (w + (-w) % _BLOCK, h + (-h) % _BLOCK))
    canvas.paste(Image.fromarray(big), (0, band))
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(lines):
        draw.text((4, 2 + i * line_h), text, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


def wrap_text(text: str, width_px: int, char_px: int = 7) -> list[str]:
    """Greedy word wrap for the default font (about ``char_px`` pixels per character)."""
    import textwrap
    return textwrap.wrap(text, max(10, width_px // char_px)) or [""]


class VideoWriter:
    """An mp4 written frame by frame (PyAV, H.264) into a temporary file that ``close`` renames to
    ``path``; frames of one video must all have the same shape."""

    def __init__(self, path: str | Path, fps: float):
        self.path, self._tmp = _atomic_target(path)
        self.fps = fps
        self.frames = 0
        self._file = None

    def write(self, frame: np.ndarray) -> None:
        import imageio.v3 as iio
        if self._file is None:
            self._file = iio.imopen(self._tmp, "w", plugin="pyav", extension=".mp4")
            self._file.init_video_stream("libx264", fps=self.fps)
        self._file.write_frame(np.ascontiguousarray(frame))
        self.frames += 1

    def close(self) -> Path | None:
        """Finish the file; returns its path, or None (and no file) if no frame was written."""
        try:
            if self._file is None:
                return None
            self._file.close()
            self._file = None
            os.replace(self._tmp, self.path)
            return self.path
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        else:
            if self._file is not None:
                self._file.close()
            self._tmp.unlink(missing_ok=True)


def mcnemar_exact(a: list[bool], b: list[bool]) -> float:
    """Two-sided exact McNemar p-value of paired outcomes (the same seeds): a binomial test on the
    discordant pairs; 1.0 when there are none."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes need the same length, got {len(a)} and {len(b)}")
    only_a = sum(bool(x) and not bool(y) for x, y in zip(a, b))
    only_b = sum(bool(y) and not bool(x) for x, y in zip(a, b))
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def success_plot(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """A PNG of each row's ``success_rate`` with its ``ci95`` interval (PIL; one column per row ``name``)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=13)
    col, left, top, plot_h, bottom = 120, 50, 30, 240, 60
    width, height = left + col * len(rows) + 20, top + plot_h + bottom
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 6), title, fill="black", font=font)

    def y(v: float) -> float:
        return top + plot_h * (1.0 - v)

    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        draw.line([(left, y(v)), (width - 20, y(v))], fill=(220, 220, 220))
        draw.text((6, y(v) - 7), f"{v:.2f}", fill="black", font=font)
    for i, row in enumerate(rows):
        x = left + col * i + col // 2
        lo, hi = row["ci95"]
        draw.line([(x, y(lo)), (x, y(hi))], fill=(40, 80, 200), width=3)
        for v in (lo, hi):
            draw.line([(x - 8, y(v)), (x + 8, y(v))], fill=(40, 80, 200), width=2)
        r = 5
        p = y(row["success_rate"])
        draw.ellipse([(x - r, p - r), (x + r, p + r)], fill=(200, 40, 40))
        draw.text((x - col // 2 + 4, top + plot_h + 8), str(row["name"])[:16], fill="black", font=font)
        draw.text((x - col // 2 + 4, top + plot_h + 26), f"{row['successes']}/{row['episodes']}", fill="black",
                  font=font)
    return save_png(image, path)


PLOT_COLORS = [(200, 40, 40), (40, 80, 200), (40, 150, 60), (150, 150, 150), (200, 120, 20), (120, 40, 160)]


def line_plot(panels: dict[str, dict[str, list[float]]], x: list[float], path: str | Path, title: str = "",
              x_label: str = "", y_label: str = "") -> Path:
    """A PNG of line charts side by side (PIL), one per ``panels`` entry ``{panel title: {series name: [y
    per x]}}``, sharing ``x``, the y axis from 0 and the legend (series in the same order and colours)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=13)
    pw, ph, left, top, bottom, gap = 360, 240, 50, 40, 50, 30
    names = list(dict.fromkeys(n for series in panels.values() for n in series))
    legend_h = 18 * len(names) + 8
    width, height = left + (pw + gap) * len(panels), top + ph + bottom + legend_h
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 4), title, fill="black", font=font)
    values = [v for series in panels.values() for ys in series.values() for v in ys if math.isfinite(v)]
    y_max = max(values, default=1.0) * 1.1 or 1.0
    x_lo, x_hi = min(x), max(x)
    span = (x_hi - x_lo) or 1.0
    for p, (panel, series) in enumerate(panels.items()):
        x0 = left + p * (pw + gap)

        def at(xv: float, yv: float) -> tuple[float, float]:
            return x0 + pw * (xv - x_lo) / span, top + ph * (1 - yv / y_max)

        draw.text((x0, top - 18), panel, fill="black", font=font)
        for k in range(5):
            yv = y_max * k / 4
            draw.line([at(x_lo, yv), at(x_hi, yv)], fill=(220, 220, 220))
            draw.text((x0 - 44, at(x_lo, yv)[1] - 7), f"{yv:.2f}", fill="black", font=font)
        for xv in x:
            draw.text((at(xv, 0)[0] - 8, top + ph + 4), f"{xv:g}", fill="black", font=font)
        draw.text((x0 + pw // 2 - 30, top + ph + 22), x_label, fill="black", font=font)
        draw.text((x0, top + ph + 22), y_label, fill="black", font=font)
        for name, ys in series.items():
            color = PLOT_COLORS[names.index(name) % len(PLOT_COLORS)]
            points = [at(xv, yv) for xv, yv in zip(x, ys)]
            draw.line(points, fill=color, width=2)
            for px, py in points:
                draw.ellipse([(px - 3, py - 3), (px + 3, py + 3)], fill=color)
    for i, name in enumerate(names):
        y = top + ph + bottom + 4 + 18 * i
        draw.line([(left, y + 7), (left + 24, y + 7)], fill=PLOT_COLORS[i % len(PLOT_COLORS)], width=3)
        draw.text((left + 30, y), name, fill="black", font=font)
    return save_png(image, path)


def save_png(image, path: str | Path) -> Path:
    """A PIL image written atomically as PNG."""
    path, tmp = _atomic_target(path)
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
