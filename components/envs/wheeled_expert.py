"""Scripted expert for the wheeled env and the waypoint labels of recorded trajectories.

``WheeledExpert``: shortest path on the floor plan's room/door graph through the open doors
(networkx, edge weight = centre -> door -> centre length) -> polyline (start, then for each door a point 1 m before and 1 m
after the doorway, then the goal point of the goal room) -> pure pursuit along the polyline
(``components.kinematics.polyline_command``) giving (v, omega). It reads the floor plan and the robot pose
(privileged for an expert, which is allowed).

``future_waypoints(poses, t, num=8, stride=1)``: the training label of the VLA's waypoint head.
"""

from __future__ import annotations

import copy
from typing import Sequence

import networkx as nx
import numpy as np

from components.envs.experts import ExpertEpisode, stack_frames
from components.envs.floorplan import FloorPlan
from components.errors import UsageError
from components.kinematics import (
    LOOKAHEAD_M,
    WHEELED_BASE,
    advance_segment,
    polyline_command,
    to_robot_frame,
    unicycle_step,
)


def future_waypoints(
    poses: np.ndarray, t: int, num: int = 8, stride: int = 1, frame: str = "xz"
) -> np.ndarray:
    """Future poses ``t + stride * k`` (k = 1..num) of a trajectory in the robot frame at time t.

    ``poses``: [T, 3] (a, b, yaw). ``frame="xz"`` (default) reads them as the wheeled env's
    ``info["pose"]`` = (x, z, yaw) in MiniWorld's frame; ``frame="xy"`` as planar (x, y, yaw CCW).
    Returns [num, 4] = (x_forward, y_left, cos dyaw, sin dyaw); indices past the end clamp to the
    last pose.
    """
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 2 or poses.shape[1] != 3 or len(poses) == 0:
        raise ValueError(f"poses must be [T, 3], got {poses.shape}")
    if not 0 <= t < len(poses):
        raise IndexError(f"t={t} outside the trajectory of length {len(poses)}")
    if stride < 1:
        raise ValueError("stride must be >= 1")
    idx = np.minimum(t + stride * np.arange(1, num + 1), len(poses) - 1)
    seen = to_robot_frame(poses[idx, :2], poses[t], frame)
    dyaw = poses[idx, 2] - poses[t, 2]
    out = np.stack([seen[:, 0], seen[:, 1], np.cos(dyaw), np.sin(dyaw)], axis=1)
    return out.astype(np.float32)


def expert_waypoints(expert: "WheeledExpert", pose, dt: float, num: int = 8, stride: int = 1) -> np.ndarray:
    """The waypoints (as ``future_waypoints``) of the trajectory ``expert`` would drive from ``pose``.

    Rolls a copy of the expert out on the unicycle model for ``num * stride`` steps of ``dt``; walls
    are not simulated (the expert's route keeps its clearance). ``expert`` itself is not advanced.
    """
    ghost = copy.copy(expert)
    state = tuple(float(v) for v in pose)
    poses = [state]
    for _ in range(num * stride):
        v, w = WHEELED_BASE.clip(*ghost.act(state))
        state = unicycle_step(state, v, w, dt, frame="xz")
        poses.append(state)
    return future_waypoints(np.array(poses), 0, num=num, stride=stride)


def plan_route(plan: FloorPlan, start_room: str, goal_room: str, closed=None) -> list[str]:
    """Room sequence of the shortest route (by centre -> door -> centre length) through open doors.

    ``closed``: the shut doors as (a, b) pairs (None: the plan's ``closed: true`` doors; an env's
    current state is ``WheeledEnv.closed_doors``). No open route is a ``UsageError`` naming them.
    """
    plan.room(start_room), plan.room(goal_room)
    try:
        return nx.shortest_path(plan.graph(closed), start_room, goal_room, weight="weight")
    except nx.NetworkXNoPath:
        shut = sorted("-".join(sorted(k)) for k in (plan.closed_doors if closed is None else map(frozenset, closed)))
        raise UsageError(
            f"{plan.source}: no open route from {start_room!r} to {goal_room!r}; closed doors: {shut}"
        ) from None


def route_points(plan: FloorPlan, rooms: Sequence[str], goal_xz, clearance: float = 1.0) -> list[np.ndarray]:
    """Points to drive through: before/after each doorway, then the goal."""
    pts: list[np.ndarray] = []
    for a, b in zip(rooms[:-1], rooms[1:]):
        door = plan.door_between(a, b)
        ra, rb = plan.room(a), plan.room(b)
        # keep the approach points inside the rooms (narrow rooms/corridors: stay on the centre line)
        ca = min(clearance, _depth_along(ra, door) / 2.0)
        cb = min(clearance, _depth_along(rb, door) / 2.0)
        before, _ = door.crossing_points(a, clearance=ca)
        _, after = door.crossing_points(a, clearance=cb)
        pts += [before, after]
    pts.append(np.asarray(goal_xz, dtype=np.float64))
    return pts


def _depth_along(room, door) -> float:
    return (room.x[1] - room.x[0]) if door.axis == "x" else (room.z[1] - room.z[0])


class WheeledExpert:
    """Pure-pursuit follower of the shortest room/door route to the goal room.

    ``waypoints`` and ``waypoint_spacing_s``: the label format ``record`` writes (the embodiment
    spec's ``chunk_horizon`` and ``waypoint_spacing_s``; ``from_spec`` reads them from the spec).
    """

    noise_window = False  # DART noise perturbs the whole episode

    def __init__(self, plan: FloorPlan, lookahead: float = LOOKAHEAD_M, v_max: float = WHEELED_BASE.v_max,
                 waypoints: int = 8, waypoint_spacing_s: float = 0.5):
        self.plan = plan
        self.lookahead = lookahead
        self.v_max = v_max
        self.waypoints = waypoints
        self.waypoint_spacing_s = waypoint_spacing_s
        self.path: list[np.ndarray] = []
        self.seg = 0

    @classmethod
    def from_spec(cls, env, spec) -> "WheeledExpert":
        return cls(env.unwrapped.plan, waypoints=spec.chunk_horizon, waypoint_spacing_s=spec.waypoint_spacing_s)

    @classmethod
    def from_env(cls, env, **kw) -> "WheeledExpert":
        """An expert for the episode ``env`` is in now."""
        e = cls(env.unwrapped.plan, **kw)
        e.reset_from_env(env)
        return e

    def reset_from_env(self, env) -> None:
        u = env.unwrapped
        pose = u.pose
        start = self.plan.room_at(pose[0], pose[1]) or u.start_room
        self.reset(pose, start, u.goal_room, u.goal_xz, closed=u.closed_doors)

    def reset(self, pose, start_room: str, goal_room: str, goal_xz=None, closed=None) -> None:
        """Route from ``pose`` in ``start_room`` to ``goal_room`` around the ``closed`` doors (see plan_route)."""
        goal_xz = self.plan.room(goal_room).goal_point if goal_xz is None else goal_xz
        self.rooms = plan_route(self.plan, start_room, goal_room, closed)
        pts = route_points(self.plan, self.rooms, goal_xz)
        start = np.asarray(pose[:2], dtype=np.float64)
        if len(pts) > 1 and np.linalg.norm(pts[0] - start) < 0.5:
            # already at the first approach point: start on the doorway line behind it instead
            u = (pts[1] - pts[0]) / max(np.linalg.norm(pts[1] - pts[0]), 1e-9)
            start = pts[0] - u * 0.5
        self.path = [start] + pts
        self.seg = 0

    def act(self, pose) -> np.ndarray:
        """(v m/s, omega rad/s) float32 [2] at ``pose`` = (x, z, yaw) in MiniWorld's frame."""
        self.seg = advance_segment(self.path, self.seg, np.asarray(pose[:2], dtype=np.float64))
        return np.array(polyline_command(self.path, self.seg, pose, self.lookahead, self.v_max), dtype=np.float32)

    def record(self, env, seed: int, noise: float = 0.0, noise_steps: int | None = None) -> ExpertEpisode:
        """One episode of the wheeled ``env`` reset with ``seed``.

        Frames: ``action`` [T, waypoints, 4] the robot-frame waypoints (``future_waypoints``) of the
        driven trajectory, one every ``waypoint_spacing_s``; ``state`` [T, 2]; ``images/front``;
        ``depth`` [T, H, W] m; ``pose`` [T, 3] (x, z, yaw); ``success`` [T] (per observation).
        ``noise`` > 0 (DART): an Ornstein-Uhlenbeck perturbation of the executed turn rate (std
        ``noise`` x the max turn rate) and speed (seeded by ``seed``); the label at frame t is then the
        trajectory the expert would drive from that pose (``expert_waypoints``), not the noisy one.
        """
        dt = env.unwrapped.dt
        rng = np.random.default_rng([seed, 1])
        ou = np.zeros(2)  # (speed, turn) perturbation
        stride = int(round(self.waypoint_spacing_s / dt))
        obs, info = env.reset(seed=seed)
        instruction = info["instruction"]
        self.reset_from_env(env)
        frames, poses, executed = [], [info["pose"]], []
        terminated = truncated = bool(info["is_success"])  # nothing to demonstrate
        while not (terminated or truncated):
            frame = {"images": obs["images"], "depth": obs["depth"], "state": obs["state"],
                     "success": info["is_success"]}
            if noise:
                # label first: the expert's own plan from here, rolled out without noise
                frame["action"] = expert_waypoints(self, info["pose"], dt, num=self.waypoints, stride=stride)
            command = self.act(info["pose"])
            if noise:
                ou += -0.15 * ou + np.sqrt(1 - 0.85**2) * rng.normal(0.0, 1.0, 2)
                command = command + np.array([0.3 * noise * ou[0], noise * WHEELED_BASE.w_max * ou[1]])
            frames.append(frame)
            executed.append(command)
            obs, _, terminated, truncated, info = env.step(command)
            poses.append(info["pose"])
        steps = len(frames)
        if not steps:
            return ExpertEpisode(seed, 0, bool(info["is_success"]), instruction)
        trajectory = np.stack(poses)  # [T + 1, 3]: the pose reached after the last step too
        if not noise:
            for t, frame in enumerate(frames):
                frame["action"] = future_waypoints(trajectory, t, num=self.waypoints, stride=stride)
        stacked = stack_frames(frames)
        out = {"action": stacked["action"], "state": stacked["state"], "images": stacked["images"],
               "depth": stacked["depth"], "pose": trajectory[:-1], "success": stacked["success"]}
        return ExpertEpisode(seed, steps, bool(info["is_success"]), instruction, out, np.stack(executed))
