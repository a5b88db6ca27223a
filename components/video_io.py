"""Reading video for the model: decode with PyAV, time frames by their presentation timestamps,
resample to the model's frame interval, letterbox to the camera's aspect ratio.

    for frame in grid_frames(decode_video("clip.mp4"), hz=10, past_s=0.5, convert=...):
        frame.index, frame.t_s, frame.current, frame.past

Times are seconds since the video's first frame (``(pts - pts_first) * time_base``), kept as exact
fractions so that "the last frame with a timestamp <= t" does not depend on rounding. Any frame rate
works, variable ones included; memory stays constant (one decoded frame at a time and, for the past
frame, the converted frames of the last ``past_s`` seconds).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from components.errors import VideoError, VideoNotFoundError
from components.processor import resize_image

#: the containers the commands look for in a folder (PyAV reads more; a file named directly may be any)
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov")


def letterbox(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` uint8 [h, w, 3] padded with black to the aspect ratio ``width:height`` (centred), then
    resized to ``[height, width, 3]``: nothing is cropped or stretched."""
    h, w = image.shape[:2]
    if h * width > w * height:  # too tall: bars left and right
        padded_h, padded_w = h, round(h * width / height)
    else:
        padded_h, padded_w = round(w * height / width), w
    if (padded_h, padded_w) != (h, w):
        canvas = np.zeros((padded_h, padded_w, 3), np.uint8)
        top, left = (padded_h - h) // 2, (padded_w - w) // 2
        canvas[top: top + h, left: left + w] = image
        image = canvas
    return resize_image(np.ascontiguousarray(image), height, width)


@dataclass
class VideoInfo:
    """What the container says about a video stream, before decoding."""
    path: Path
    width: int
    height: int
    average_fps: float | None  # the container's average rate (None if it does not say)
    duration_s: float | None   # the stream's (or container's) duration, if known

    def frames_at(self, hz: float) -> int | None:
        """About how many frames a grid of ``hz`` over the video has (for a progress bar)."""
        return None if self.duration_s is None else max(1, math.ceil(self.duration_s * hz - 1e-6))


@dataclass
class DecodedVideo:
    """A video opened for decoding: ``info``, and ``frames()`` yielding ``(t, frame)`` once, in
    presentation order (``t`` a Fraction of seconds since the first frame; ``frame`` a PyAV VideoFrame)."""
    info: VideoInfo
    frames: Callable[[], Iterator[tuple[Fraction, Any]]]
    decoded: int = 0   # frames yielded so far
    skipped: int = 0   # frames dropped because their timestamp did not increase
    last_t: Fraction | None = None  # time of the last frame yielded

    def measured_fps(self) -> float | None:
        """The average rate of the decoded frames (frames - 1 over the time from the first to the last),
        or the container's when fewer than two frames were decoded."""
        if self.last_t is None or self.decoded < 2 or self.last_t <= 0:
            return self.info.average_fps
        return float((self.decoded - 1) / self.last_t)

    def last_grid_s(self, hz: float) -> float | None:
        """The last time of the grid ``i / hz`` that the decoded frames reach (what ``grid_frames`` ends at)."""
        if self.last_t is None:
            return None
        period = 1 / Fraction(hz).limit_denominator(10 ** 6)
        return float((self.last_t // period) * period)


def decode_video(path: str | Path) -> DecodedVideo:
    """Open ``path`` with PyAV; a missing, unreadable, corrupt or frameless file is a :class:`VideoError`
    naming it (frameless is found when decoding ends)."""
    import av

    path = Path(path)
    if not path.exists():
        raise VideoNotFoundError(f"video '{path}' does not exist")
    if not path.is_file():
        raise VideoError(f"video '{path}' is not a file")
    try:
        container = av.open(str(path))
    except av.FFmpegError as err:
        raise VideoError(f"{path}: cannot be read as a video ({type(err).__name__}: {err.strerror or err}); "
                         f"expected a file PyAV/FFmpeg reads, e.g. mp4, mkv, webm or avi") from None
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        container.close()
        raise VideoError(f"{path}: has no video stream (streams: {', '.join(kinds)}); expected a video")
    stream = container.streams.video[0]
    if stream.codec_context is None or not stream.codec_context.name:
        container.close()
        raise VideoError(f"{path}: the video stream's codec is unknown or unsupported (container "
                         f"'{container.format.name}'); the file may be truncated")
    stream.thread_type = "AUTO"
    declared = stream.frames  # the frame count the container's index gives (0: it does not say)
    duration = (float(stream.duration * stream.time_base) if stream.duration
                else container.duration / 1e6 if container.duration else None)
    info = VideoInfo(path, stream.codec_context.width, stream.codec_context.height,
                     float(stream.average_rate) if stream.average_rate else None, duration)
    decoded = DecodedVideo(info, lambda: None)

    def frames() -> Iterator[tuple[Fraction, Any]]:
        first = None
        fallback = Fraction(1, 1) / (stream.average_rate or 25)  # for a frame without a timestamp
        try:
            with container:
                for frame in container.decode(stream):
                    last = decoded.last_t
                    if frame.pts is None:
                        t = (last + fallback) if last is not None else Fraction(0)
                    else:
                        time = Fraction(frame.pts) * stream.time_base
                        first = time if first is None else first
                        t = time - first
                    if last is not None and t <= last:
                        decoded.skipped += 1
                        continue
                    decoded.last_t = t
                    decoded.decoded += 1
                    yield t, frame
        except av.FFmpegError as err:
            last = decoded.last_t
            at = f"after {float(last):.3f} s" if last is not None else "at its first frame"
            raise VideoError(f"{path}: corrupt video, decoding failed {at} ({type(err).__name__}: "
                             f"{err.strerror or err})") from None
        if decoded.decoded == 0:
            raise VideoError(f"{path}: the video stream has no frames (container '{container.format.name}'); "
                             f"expected at least one decodable frame")
        if declared and decoded.decoded + decoded.skipped < declared:
            raise VideoError(f"{path}: corrupt or truncated video: its index declares {declared} frames but "
                             f"only {decoded.decoded + decoded.skipped} could be decoded (up to "
                             f"{float(decoded.last_t):.3f} s)")

    decoded.frames = frames
    return decoded


def frame_rgb(frame) -> np.ndarray:
    """A PyAV VideoFrame as uint8 [H, W, 3] RGB."""
    return frame.to_ndarray(format="rgb24")


@dataclass
class GridFrame:
    """One time of the resampled video: what is shown at ``t_s`` and at ``t_s - past_s``."""
    index: int            # position on the grid: t_s = index / hz
    t_s: float
    current: Any          # convert(frame) of the last frame with time <= t_s
    past: Any             # convert(frame) of the last frame with time <= t_s - past_s (the first before it)
    source: int           # index (in decoding order) of the current frame
    past_source: int


def grid_frames(frames: Iterator[tuple[Fraction, Any]], hz: float, past_s: float,
                convert: Callable[[Any], Any], convert_past: Callable[[Any], Any] | None = None
                ) -> Iterator[GridFrame]:
    """Resample ``(t, frame)`` (increasing ``t`` from 0, seconds) to the grid ``t_i = i / hz`` for every
    ``t_i`` up to the last frame's time: the frame shown at ``t_i`` is the last one with ``t <= t_i``.

    ``convert`` turns a frame into what a GridFrame holds (``convert_past``, default ``convert``, for the
    past view); each frame is converted only if some grid time shows it, and only the converted past
    frames of the last ``past_s`` seconds are kept.
    """
    period = 1 / Fraction(hz).limit_denominator(10 ** 6)
    past = Fraction(past_s).limit_denominator(10 ** 6)
    convert_past = convert_past or convert
    recent: deque[tuple[Fraction, int, Any]] = deque()  # (start time, source index, converted past view)
    i = 0  # next grid index

    def shown(k: int, start: Fraction, frame, end: Fraction | None) -> Iterator[GridFrame]:
        """Frame ``k`` is shown over ``[start, end)`` (``end`` None: the last frame, shown at ``start`` only)."""
        nonlocal i

        def before_end(t: Fraction) -> bool:
            return t <= start if end is None else t < end
        j = -(-(start + past) // period)  # the first grid index whose past time is >= start
        if k == 0 or before_end(j * period - past):
            recent.append((start, k, convert_past(frame)))
        current = None
        while before_end(i * period):
            t = i * period
            while len(recent) > 1 and recent[1][0] <= t - past:
                recent.popleft()
            if current is None:
                current = convert(frame)
            yield GridFrame(i, float(t), current, recent[0][2], k, recent[0][1])
            i += 1

    previous = None
    for k, (t, frame) in enumerate(frames):
        if previous is not None:
            yield from shown(k - 1, previous[0], previous[1], t)
        previous = (t, frame)
    if previous is not None:
        yield from shown(k, previous[0], previous[1], None)
