"""Ground truth for trajectory prediction on video: the poses sidecar, the true future waypoints, three
baselines and the displacement errors per horizon step.

The sidecar of ``clip.mp4`` is ``clip.poses.csv``: header ``t_s,x_m,y_m,yaw_rad``, one pose per row at
any rate, ``t_s`` seconds since the video's first frame (the clock of ``components.video_io``), x, y and
yaw (counter-clockwise from +x) in any planar world frame. Poses between rows are linear in x, y and the
unwrapped yaw. Every waypoint is in the ground frame of the camera at t (x forward, y left), as the
model predicts them.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.errors import VideoError, VideoNotFoundError
from components.kinematics import to_robot_frame

POSES_SUFFIX = ".poses.csv"
POSES_HEADER = ["t_s", "x_m", "y_m", "yaw_rad"]
HISTORY_S = 0.5  # what the velocity baselines see of the true past
METHODS = ("model", "constant_velocity", "linear", "standing_still")


def sidecar_path(video: str | Path) -> Path:
    """``dir/clip.mp4`` -> ``dir/clip.poses.csv``."""
    video = Path(video)
    return video.with_name(video.stem + POSES_SUFFIX)


@dataclass
class PoseTrack:
    """A planar trajectory ``t_s [T]`` (increasing), ``xy [T, 2]`` m, ``yaw_rad [T]`` (unwrapped)."""
    t_s: np.ndarray
    xy: np.ndarray
    yaw_rad: np.ndarray
    source: str = "<memory>"

    @classmethod
    def read(cls, path: str | Path) -> "PoseTrack":
        """Read a poses sidecar; a malformed one is a :class:`VideoError` naming the file and line."""
        path = Path(path)
        if not path.is_file():
            raise VideoNotFoundError(f"poses file '{path}' does not exist")
        rows = []
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            if header != POSES_HEADER:
                raise VideoError(f"{path}:1: header is {','.join(header) or '(empty)'}; expected "
                                 f"{','.join(POSES_HEADER)}")
            for row in reader:
                line = reader.line_num
                if not row or not "".join(row).strip():
                    continue
                if len(row) != len(POSES_HEADER):
                    raise VideoError(f"{path}:{line}: {len(row)} values; expected {len(POSES_HEADER)} "
                                     f"({','.join(POSES_HEADER)})")
                try:
                    values = [float(v) for v in row]
                except ValueError:
                    raise VideoError(f"{path}:{line}: {','.join(row)!r} is not {len(POSES_HEADER)} numbers "
                                     f"({','.join(POSES_HEADER)})") from None
                if not all(math.isfinite(v) for v in values):
                    raise VideoError(f"{path}:{line}: non-finite value in {','.join(row)}")
                if rows and values[0] <= rows[-1][0]:
                    raise VideoError(f"{path}:{line}: t_s {values[0]:g} does not increase (previous row "
                                     f"{rows[-1][0]:g}); expected rows in time order")
                rows.append(values)
        if len(rows) < 2:
            raise VideoError(f"{path}: {len(rows)} pose row(s); expected at least 2 to interpolate between")
        a = np.asarray(rows)
        return cls(a[:, 0], a[:, 1:3], np.unwrap(a[:, 3]), str(path))

    def to_csv(self) -> str:
        """The sidecar text of this track (what :meth:`read` reads back to the same numbers)."""
        rows = [",".join(POSES_HEADER)]
        rows += [f"{t!r},{x!r},{y!r},{yaw!r}" for t, (x, y), yaw in
                 zip(self.t_s.tolist(), self.xy.tolist(), self.yaw_rad.tolist())]
        return "\n".join(rows) + "\n"

    def at(self, t_s) -> np.ndarray:
        """Poses ``[..., 3]`` (x, y, yaw) at times ``t_s`` inside the track (linear interpolation)."""
        t = np.asarray(t_s, dtype=np.float64)
        return np.stack([np.interp(t, self.t_s, self.xy[:, 0]), np.interp(t, self.t_s, self.xy[:, 1]),
                         np.interp(t, self.t_s, self.yaw_rad)], axis=-1)

    def require_covers(self, first_s: float, last_s: float, video: str, tol_s: float = 1e-6) -> None:
        """Raise unless the poses span the video's grid times ``[first_s, last_s]``."""
        if self.t_s[0] > first_s + tol_s or self.t_s[-1] < last_s - tol_s:
            raise VideoError(f"{self.source}: poses cover {self.t_s[0]:g}..{self.t_s[-1]:g} s but the video {video} "
                             f"runs {first_s:g}..{last_s:g} s; expected poses over the whole video")

    def evaluable(self, t_s: float, horizon_s: float, tol_s: float = 1e-6) -> bool:
        """Whether the true past (``HISTORY_S``) and future (``horizon_s``) of ``t_s`` lie inside the poses."""
        return self.t_s[0] - tol_s <= t_s - HISTORY_S and t_s + horizon_s <= self.t_s[-1] + tol_s


def _in_frame_at(track: PoseTrack, t_s: float, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``[N, 2]`` and yaw changes ``[N]`` of the track at ``times``, in its ground frame at ``t_s``."""
    here = track.at(t_s)
    there = track.at(times)
    return to_robot_frame(there[:, :2], here, frame="xy"), there[:, 2] - here[2]


def horizon_times(spacing_s: float, horizon: int) -> np.ndarray:
    """``[H]`` seconds ahead of each waypoint: spacing, 2 spacing, ..."""
    return spacing_s * np.arange(1, horizon + 1)


def true_waypoints(track: PoseTrack, t_s: float, spacing_s: float, horizon: int) -> np.ndarray:
    """``[H, 4]`` (x_forward_m, y_left_m, cos, sin): the poses at ``t_s + spacing_s * k`` in the frame at ``t_s``."""
    xy, dyaw = _in_frame_at(track, t_s, t_s + horizon_times(spacing_s, horizon))
    return np.concatenate([xy, np.cos(dyaw)[:, None], np.sin(dyaw)[:, None]], axis=1)


def baseline_positions(track: PoseTrack, t_s: float, spacing_s: float, horizon: int) -> dict[str, np.ndarray]:
    """The baselines' future positions ``[H, 2]`` in the frame at ``t_s``, from the true poses of the last
    ``HISTORY_S`` seconds:

    - ``constant_velocity``: the speed and yaw rate that carry the pose at ``t_s - HISTORY_S`` to the pose
      at ``t_s`` on a circular arc (a unicycle at constant v, w), continued on that arc;
    - ``linear``: the displacement of the last ``HISTORY_S`` seconds continued on a straight line;
    - ``standing_still``: the camera stays where it is.
    """
    ahead = horizon_times(spacing_s, horizon)
    (back,), (dyaw,) = _in_frame_at(track, t_s, np.array([t_s - HISTORY_S]))
    moved = -back  # displacement over the history, in the frame at t_s
    w = -dyaw / HISTORY_S  # yaw rate (the past pose's yaw relative to now is -w * HISTORY_S)
    chord = float(np.hypot(*moved))
    # the arc whose chord is `moved`: chord = v * T * sinc(w T / 2); backwards when the chord points back
    mid_heading = -w * HISTORY_S / 2  # heading at the middle of the arc, relative to now
    forward = math.cos(mid_heading) * moved[0] + math.sin(mid_heading) * moved[1] >= 0
    v = (1 if forward else -1) * chord / (HISTORY_S * np.sinc(w * HISTORY_S / (2 * math.pi)))
    a = w * ahead  # heading change at each future time
    arc = np.stack([v * ahead * np.sinc(a / math.pi),  # v sin(w tau) / w
                    v * ahead * np.sin(a / 2) * np.sinc(a / (2 * math.pi))], axis=1)  # v (1 - cos(w tau)) / w
    return {"constant_velocity": arc,
            "linear": moved[None, :] * (ahead / HISTORY_S)[:, None],
            "standing_still": np.zeros((horizon, 2))}


def displacement_summary(errors_m: np.ndarray) -> dict:
    """``errors_m [N, H]`` (metres, per frame and horizon step) -> ``{"ade_m": [H], "fde_m": [H], "frames": N}``:
    at horizon step k, ADE is the mean error over steps 1..k and FDE the error at step k, averaged over frames."""
    errors_m = np.asarray(errors_m, dtype=np.float64)
    if errors_m.size == 0:
        return {"ade_m": None, "fde_m": None, "frames": 0}
    per_step = errors_m.mean(axis=0)
    ade = np.cumsum(per_step) / np.arange(1, len(per_step) + 1)
    return {"ade_m": [float(v) for v in ade], "fde_m": [float(v) for v in per_step], "frames": int(len(errors_m))}
