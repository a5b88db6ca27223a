"""Waypoint follower of the wheeled base: a chunk of predicted waypoints -> (v, omega) commands.

The VLA predicts ``waypoints: [N, 4]`` = (x_forward_m, y_left_m, cos dyaw, sin dyaw) in the robot
frame at the moment of prediction, one every ``spacing_s`` (the convention of
``components.envs.wheeled_expert.future_waypoints``). The robot keeps moving while a chunk is
executed, so the follower tracks its own pose in that frame by dead reckoning of the commands it
gave (unicycle model, heading first then the move, as the wheeled env integrates them): no
privileged pose from the simulator is used. A new chunk resets the frame.

Each command is pure pursuit on the polyline (robot start, waypoint 1, ..., waypoint N):

* the target is the point ``lookahead_m`` further along the path than the robot's projection on it;
* alpha = bearing of the target in the current robot frame (positive = to the left);
* ``|alpha| > turn_in_place_rad`` (target behind or beside the robot): v = 0, turn towards it;
* otherwise v = the speed the waypoints ask for at this time (segment length / spacing, so a chunk
  of waypoints bunched at the robot means "stop"), omega = v * curvature with curvature
  2 sin(alpha) / distance (the arc through the target); if omega would exceed ``w_max`` the arc is
  kept and v is reduced instead;
* within ``goal_tolerance_m`` of the last waypoint: stop.

Sign convention (checked against ``components.envs.wheeled``): omega > 0 turns left (yaw grows and
forward = (cos yaw, -sin yaw) in MiniWorld's (x, z), so the heading rotates towards "left").
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class FollowerConfig:
    """Limits and gains of :class:`WaypointFollower` (defaults: the wheeled env's action space)."""
    v_max: float = 0.7           # m/s, upper bound of the env's action space
    w_max: float = 1.5           # rad/s
    v_min: float = 0.0           # m/s, lower bound of the env's action space (no reversing)
    dt_s: float = 0.1            # control period of the env
    spacing_s: float = 0.5       # time between predicted waypoints
    lookahead_m: float = 0.6     # as the scripted expert that made the training labels
    turn_in_place_rad: float = 0.6
    turn_gain: float = 2.5       # omega = gain * alpha while turning in place
    goal_tolerance_m: float = 0.1


class WaypointFollower:
    """Pure pursuit on one chunk of waypoints at a time (see the module docstring)."""

    def __init__(self, config: FollowerConfig | None = None):
        self.config = config or FollowerConfig()
        self.path = np.zeros((1, 2))      # [N+1, 2] (x_forward, y_left) in the frame of the chunk
        self.pose = np.zeros(3)           # (x, y, yaw_rad) of the robot in that frame
        self.elapsed_s = 0.0

    def reset(self, waypoints: np.ndarray) -> None:
        """Start following ``waypoints: [N, >=2]`` given in the robot's current frame."""
        wp = np.asarray(waypoints, dtype=np.float64)
        if wp.ndim != 2 or wp.shape[1] < 2 or len(wp) == 0:
            raise ValueError(f"waypoints must be [N, 2+] (x_forward, y_left, ...), got shape {wp.shape}")
        if not np.isfinite(wp[:, :2]).all():
            raise ValueError("waypoints contain NaN/inf")
        self.path = np.concatenate([np.zeros((1, 2)), wp[:, :2]], axis=0)
        self.pose = np.zeros(3)
        self.elapsed_s = 0.0

    def command(self) -> np.ndarray:
        """The next (v m/s, omega rad/s) within the limits; advances the dead-reckoned pose by ``dt_s``."""
        v, w = self._pursuit()
        c = self.config
        v = float(np.clip(v, c.v_min, c.v_max))
        w = float(np.clip(w, -c.w_max, c.w_max))
        x, y, yaw = self.pose
        yaw += w * c.dt_s
        self.pose = np.array([x + v * c.dt_s * math.cos(yaw), y + v * c.dt_s * math.sin(yaw), yaw])
        self.elapsed_s += c.dt_s
        return np.array([v, w], dtype=np.float32)

    def _pursuit(self) -> tuple[float, float]:
        c = self.config
        p, yaw = self.pose[:2], float(self.pose[2])
        if np.linalg.norm(self.path[-1] - p) < c.goal_tolerance_m:
            return 0.0, 0.0
        s_robot, seg_len = self._project(p)
        target = self._point_at(s_robot + c.lookahead_m, seg_len)
        d = target - p
        dist = float(np.linalg.norm(d))
        if dist < 1e-9:
            return 0.0, 0.0
        alpha = math.atan2(d[1], d[0]) - yaw
        alpha = math.atan2(math.sin(alpha), math.cos(alpha))
        if abs(alpha) > c.turn_in_place_rad:
            return 0.0, c.turn_gain * alpha
        v = min(self._reference_speed(seg_len), c.v_max)
        curvature = 2.0 * math.sin(alpha) / dist
        w = v * curvature
        if abs(w) > c.w_max:
            v = c.w_max / abs(curvature)
            w = math.copysign(c.w_max, curvature)
        return v, w

    def _project(self, p: np.ndarray) -> tuple[float, np.ndarray]:
        """Arc length of the point of the path closest to ``p``; segment lengths ``[N]``."""
        a, b = self.path[:-1], self.path[1:]
        ab = b - a
        seg_len = np.linalg.norm(ab, axis=1)
        t = np.clip(np.einsum("ij,ij->i", p - a, ab) / np.maximum(seg_len ** 2, 1e-12), 0.0, 1.0)
        closest = a + ab * t[:, None]
        k = int(np.argmin(np.linalg.norm(closest - p, axis=1)))
        return float(seg_len[:k].sum() + t[k] * seg_len[k]), seg_len

    def _point_at(self, s: float, seg_len: np.ndarray) -> np.ndarray:
        ends = np.cumsum(seg_len)
        k = int(np.searchsorted(ends, s))
        if k >= len(seg_len):
            return self.path[-1]
        start = ends[k] - seg_len[k]
        t = (s - start) / seg_len[k] if seg_len[k] > 1e-12 else 1.0
        return self.path[k] + (self.path[k + 1] - self.path[k]) * t

    def _reference_speed(self, seg_len: np.ndarray) -> float:
        """Speed of the waypoint trajectory at the current time (the segment being timed)."""
        k = min(int(self.elapsed_s / self.config.spacing_s), len(seg_len) - 1)
        return float(seg_len[k] / self.config.spacing_s)
