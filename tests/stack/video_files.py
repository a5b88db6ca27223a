"""Small video files and poses sidecars for the trajectory tests, written with PyAV: frame k is a solid
colour that encodes k (``index_color``), so a test can tell which source frame the reader showed."""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def index_color(k: int) -> np.ndarray:
    """The RGB colour of frame ``k`` (k < 256): red = 8 k mod 256, green = 8 (k // 32)."""
    return np.array([(8 * k) % 256, 8 * (k // 32), 128], np.uint8)


def color_index(rgb: np.ndarray) -> int:
    """The frame index ``index_color`` encoded (from the mean colour of an image, robust to lossy codecs)."""
    r, g = np.asarray(rgb, np.float64).reshape(-1, 3).mean(axis=0)[:2]
    return int(round(g / 8)) * 32 + int(round(r / 8))


def write_video(path: Path, pts_ms: list[int], size: tuple[int, int] = (64, 48), codec: str = "ffv1") -> Path:
    """A video whose frame k is ``index_color(k)`` at ``pts_ms[k]`` milliseconds (any spacing: variable
    frame rate); ``size`` (width, height). ffv1 (lossless, any size) in mkv; libx264 in mp4."""
    fmt, pix = ("matroska", "bgr0") if codec == "ffv1" else ("mp4", "yuv420p")
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height = size
        stream.pix_fmt = pix
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)  # keeps every pts_ms exact
        for k, t in enumerate(pts_ms):
            frame = av.VideoFrame.from_ndarray(np.broadcast_to(index_color(k), (size[1], size[0], 3)).copy(),
                                               format="rgb24")
            frame.pts, frame.time_base = int(t), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frameless_video(path: Path) -> Path:
    """An avi whose video stream has no frames."""
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuv420p"
        container.start_encoding()  # the header, with no frame after it
    return path


def write_audio_only(path: Path) -> Path:
    """An m4a with one short silent audio stream and no video."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_garbage(path: Path, size: int = 4000) -> Path:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def write_truncated_mp4(path: Path) -> Path:
    """An mp4 (index at the front) cut in the middle of its frames, as an interrupted download leaves it."""
    full = path.with_name(".full" + path.suffix)
    with av.open(str(full), "w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(30):
            image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    os.unlink(full)
    return path


def write_poses(path: Path, t_s: np.ndarray, x_m: np.ndarray, y_m: np.ndarray, yaw_rad: np.ndarray) -> Path:
    rows = "".join(f"{t:.6f},{x:.9f},{y:.9f},{a:.9f}\n" for t, x, y, a in zip(t_s, x_m, y_m, yaw_rad))
    path.write_text("t_s,x_m,y_m,yaw_rad\n" + rows)
    return path
