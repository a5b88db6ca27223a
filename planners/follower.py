"""Waypoint follower of the wheeled base: a chunk of predicted waypoints -> (v, omega) commands.

The VLA predicts ``waypoints: [N, 4]`` = (x_forward_m, y_left_m, cos dyaw, sin dyaw) in the robot
frame at the moment of prediction, one every ``spacing_s`` (the convention of
``components.envs.wheeled_expert.future_waypoints``). The robot keeps moving while a chunk is
executed, so the follower tracks its own pose in that frame by dead reckoning of the commands it
gave (``components.kinematics.unicycle_step``): no privileged pose from the simulator is used. A
new chunk resets the frame.

Each command is pure pursuit (``components.kinematics.pure_pursuit``) on the polyline (robot
start, waypoint 1, ..., waypoint N), from the robot's closest point on it:

* ``|alpha| > turn_in_place_rad`` (target behind or beside the robot): v = 0, turn towards it;
* otherwise v = the speed the waypoints ask for at this time (segment length / spacing, so a chunk
  of waypoints bunched at the robot means "stop"), omega = v * curvature with curvature
  2 sin(alpha) / distance (the arc through the target); if omega would exceed ``w_max`` the arc is
  kept and v is reduced instead;
* within ``goal_tolerance_m`` of the last waypoint: stop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from components.kinematics import (
    LOOKAHEAD_M,
    TURN_GAIN,
    TURN_IN_PLACE_RAD,
    WHEELED_BASE,
    BaseLimits,
    project_on_polyline,
    pure_pursuit,
    unicycle_step,
)


@dataclass
class FollowerConfig:
    """Limits and gains of :class:`WaypointFollower` (defaults: the wheeled base and its expert)."""
    v_max: float = WHEELED_BASE.v_max      # m/s
    w_max: float = WHEELED_BASE.w_max      # rad/s
    v_min: float = WHEELED_BASE.v_min      # m/s (no reversing)
    dt_s: float = WHEELED_BASE.dt_s        # control period of the env
    spacing_s: float = 0.5                 # time between predicted waypoints
    lookahead_m: float = LOOKAHEAD_M       # as the scripted expert that made the training labels
    turn_in_place_rad: float = TURN_IN_PLACE_RAD
    turn_gain: float = TURN_GAIN           # omega = gain * alpha while turning in place
    goal_tolerance_m: float = 0.1

    @property
    def limits(self) -> BaseLimits:
        return BaseLimits(v_min=self.v_min, v_max=self.v_max, w_max=self.w_max, dt_s=self.dt_s)


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
        c = self.config
        v, w = c.limits.clip(*self._pursuit())
        self.pose = np.array(unicycle_step(self.pose, v, w, c.dt_s, frame="xy", wrap=False))
        self.elapsed_s += c.dt_s
        return np.array([v, w], dtype=np.float32)

    def _pursuit(self) -> tuple[float, float]:
        c = self.config
        p = self.pose[:2]
        if np.linalg.norm(self.path[-1] - p) < c.goal_tolerance_m:
            return 0.0, 0.0
        s_robot, seg_len = project_on_polyline(self.path, p)
        target, alpha = pure_pursuit(self.path, s_robot, self.pose, c.lookahead_m, frame="xy")
        dist = float(np.linalg.norm(target - p))
        if dist < 1e-9:
            return 0.0, 0.0
        if abs(alpha) > c.turn_in_place_rad:
            return 0.0, c.turn_gain * alpha
        v = min(self._reference_speed(seg_len), c.v_max)
        curvature = 2.0 * math.sin(alpha) / dist
        w = v * curvature
        if abs(w) > c.w_max:
            v = c.w_max / abs(curvature)
            w = math.copysign(c.w_max, curvature)
        return v, w

    def _reference_speed(self, seg_len: np.ndarray) -> float:
        """Speed of the waypoint trajectory at the current time (the segment being timed)."""
        k = min(int(self.elapsed_s / self.config.spacing_s), len(seg_len) - 1)
        return float(seg_len[k] / self.config.spacing_s)
