"""Kinematics of the wheeled base: its limits, the unicycle step, robot-frame transforms, pure pursuit.

Poses are ``(x, y, yaw_rad)`` in one of two ground frames: ``"xz"`` is MiniWorld's (the wheeled
env's ``info["pose"]`` = (x, z, yaw), forward = (cos yaw, -sin yaw)), ``"xy"`` a planar
right-handed frame (forward = (cos yaw, sin yaw)). In both, omega > 0 turns left. The robot frame
is (x_forward_m, y_left_m).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class BaseLimits:
    """Command limits and control period of a differential-drive base."""

    v_min: float = 0.0  # m/s (no reversing)
    v_max: float = 0.7  # m/s
    w_max: float = 1.5  # rad/s, either way
    dt_s: float = 0.1   # s per control step

    def clip(self, v: float, w: float) -> tuple[float, float]:
        """(v m/s, omega rad/s) within the limits."""
        return float(np.clip(v, self.v_min, self.v_max)), float(np.clip(w, -self.w_max, self.w_max))


#: the wheeled base of ``components.envs.wheeled`` (its action space is built from these)
WHEELED_BASE = BaseLimits()

# Pure-pursuit gains shared by the scripted expert and the waypoint follower (which tracks its labels)
LOOKAHEAD_M = 0.6
TURN_IN_PLACE_RAD = 0.6  # |bearing| above this: turn on the spot
TURN_GAIN = 2.5          # omega = gain * bearing while turning on the spot


def wrap_angle(a_rad: float) -> float:
    """``a_rad`` in (-pi, pi]."""
    return math.atan2(math.sin(a_rad), math.cos(a_rad))


def forward_left(yaw_rad: float, frame: str = "xz") -> tuple[np.ndarray, np.ndarray]:
    """Unit forward and left vectors [2] of a robot at heading ``yaw_rad`` in ground ``frame``."""
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    if frame == "xz":  # MiniWorld: forward = (cos, -sin) in (x, z); left = (-sin, -cos)
        return np.array([c, -s]), np.array([-s, -c])
    if frame == "xy":
        return np.array([c, s]), np.array([-s, c])
    raise ValueError(f"unknown frame {frame!r}; use 'xz' (MiniWorld pose) or 'xy'")


def xz_to_xy(poses) -> np.ndarray:
    """Poses ``[..., 3]`` (x, z, yaw) in MiniWorld's frame as (x, y, yaw) in the planar "xy" frame (y = -z)."""
    p = np.array(poses, dtype=np.float64)
    p[..., 1] *= -1.0
    return p


def turn(yaw_rad: float, w: float, dt_s: float) -> float:
    """Heading after turning at ``w`` rad/s for ``dt_s``, in (-pi, pi]."""
    return wrap_angle(yaw_rad + w * dt_s)


def unicycle_step(pose: Sequence[float], v: float, w: float, dt_s: float, frame: str = "xz",
                  wrap: bool = True) -> tuple[float, float, float]:
    """One control step of the unicycle model as the wheeled env integrates it: heading first, then
    a straight move of ``v * dt_s`` along the new heading (``wrap``: keep yaw in (-pi, pi])."""
    x, y, yaw = pose
    yaw = turn(yaw, w, dt_s) if wrap else yaw + w * dt_s
    fwd, _ = forward_left(yaw, frame)
    return float(x + v * dt_s * fwd[0]), float(y + v * dt_s * fwd[1]), float(yaw)


def to_robot_frame(points: np.ndarray, pose: Sequence[float], frame: str = "xz") -> np.ndarray:
    """Ground points ``[..., 2]`` as (x_forward, y_left) ``[..., 2]`` seen from a robot at ``pose``."""
    fwd, left = forward_left(float(pose[2]), frame)
    d = np.asarray(points, dtype=np.float64) - np.asarray(pose[:2], dtype=np.float64)
    return np.stack([d @ fwd, d @ left], axis=-1)


def from_robot_frame(points: np.ndarray, pose: Sequence[float], frame: str = "xz") -> np.ndarray:
    """Robot-frame (x_forward, y_left) points ``[..., 2]`` of a robot at ``pose`` as ground points ``[..., 2]``."""
    fwd, left = forward_left(float(pose[2]), frame)
    p = np.asarray(points, dtype=np.float64)
    return np.asarray(pose[:2], dtype=np.float64) + p[..., :1] * fwd + p[..., 1:2] * left


def bearing(target: np.ndarray, pose: Sequence[float], frame: str = "xz") -> float:
    """Angle (rad, in (-pi, pi], positive = left) of the ground point ``target`` [2] from a robot at ``pose``."""
    x_fwd, y_left = to_robot_frame(target, pose, frame)
    return math.atan2(float(y_left), float(x_fwd))


def subgoal_features(subgoal_xy: Sequence[float]) -> np.ndarray:
    """The subgoal state of the ``wheeled_nav`` embodiment from a subgoal (x_forward, y_left) in the
    robot frame: float32 (x_forward, y_left, cos bearing, sin bearing)."""
    x, y = float(subgoal_xy[0]), float(subgoal_xy[1])
    b = math.atan2(y, x)
    return np.array([x, y, math.cos(b), math.sin(b)], dtype=np.float32)


# ---------------------------------------------------------------------------------- pure pursuit


def project_on_polyline(path: np.ndarray, p: np.ndarray) -> tuple[float, np.ndarray]:
    """Arc length (m) of the point of the polyline ``path`` [N, 2] closest to ``p`` [2]; segment lengths [N-1]."""
    a, b = path[:-1], path[1:]
    ab = b - a
    seg_len = np.linalg.norm(ab, axis=1)
    t = np.clip(np.einsum("ij,ij->i", p - a, ab) / np.maximum(seg_len ** 2, 1e-12), 0.0, 1.0)
    closest = a + ab * t[:, None]
    k = int(np.argmin(np.linalg.norm(closest - p, axis=1)))
    return float(seg_len[:k].sum() + t[k] * seg_len[k]), seg_len


def point_along(path: Sequence[np.ndarray], s_m: float) -> np.ndarray:
    """Point [2] at arc length ``s_m`` along the polyline ``path`` [N, 2], held at its end past it.

    Segments shorter than 1 nm are stepped over (their length still counts).
    """
    point = path[0]
    for a, b in zip(path[:-1], path[1:]):
        ab = b - a
        length = float(np.linalg.norm(ab))
        if length > 1e-9:
            point = a + ab / length * min(s_m, length)
        if s_m <= length:
            return point
        s_m = s_m - length
    return point


def pure_pursuit(path: Sequence[np.ndarray], s_m: float, pose: Sequence[float], lookahead_m: float = LOOKAHEAD_M,
                 frame: str = "xz") -> tuple[np.ndarray, float]:
    """Pure pursuit on a polyline: the target [2] ``lookahead_m`` further along ``path`` than the
    robot's arc length ``s_m`` on it, and the target's bearing (rad, positive = left) from ``pose``.

    The speed law is the caller's; turning on the spot when ``|bearing| > TURN_IN_PLACE_RAD`` is the
    convention of both callers (the expert and the waypoint follower).
    """
    target = point_along(path, s_m + lookahead_m)
    return target, bearing(target, pose, frame)


def advance_segment(path: Sequence[np.ndarray], seg: int, p: np.ndarray, reach_m: float = 0.3) -> int:
    """Index of the segment (``path[seg]`` -> ``path[seg + 1]``) a robot at ``p`` [2] follows now.

    Moves past a segment once the robot's projection reaches its end (5 cm slack) or the robot is
    within ``reach_m`` of its end; the last segment is never left.
    """
    while seg < len(path) - 2:
        a, b = path[seg], path[seg + 1]
        ab = b - a
        length = float(np.linalg.norm(ab))
        s = float((p - a) @ ab / length) if length > 1e-9 else length
        if s >= length - 0.05 or np.linalg.norm(p - b) < reach_m:
            seg += 1
        else:
            break
    return seg


def polyline_command(path: Sequence[np.ndarray], seg: int, pose: Sequence[float], lookahead_m: float = LOOKAHEAD_M,
                     v_max: float = WHEELED_BASE.v_max, frame: str = "xz") -> tuple[float, float]:
    """(v m/s, omega rad/s) of the scripted expert's controller on segment ``seg`` of ``path`` [N, 2].

    Pure pursuit on this segment and the next; turn on the spot when ``|bearing| > TURN_IN_PLACE_RAD``,
    else v shrinks with the bearing; on the last segment v slows to the remaining distance (>= 0.15 m/s).
    """
    p = np.asarray(pose[:2], dtype=np.float64)
    a, b = path[seg], path[seg + 1]
    ab = b - a
    length = float(np.linalg.norm(ab))
    u = ab / length if length > 1e-9 else np.zeros(2)
    s = float(np.clip((p - a) @ u, 0.0, length))
    _, alpha = pure_pursuit(path[seg:seg + 3], s, pose, lookahead_m, frame=frame)
    w = float(np.clip(TURN_GAIN * alpha, -WHEELED_BASE.w_max, WHEELED_BASE.w_max))
    if abs(alpha) > TURN_IN_PLACE_RAD:
        return 0.0, w
    v = v_max * (1.0 - abs(alpha) / TURN_IN_PLACE_RAD) ** 0.5
    if seg >= len(path) - 2:
        v = min(v, max(0.15, float(np.linalg.norm(path[-1] - p))))
    return float(v), w
