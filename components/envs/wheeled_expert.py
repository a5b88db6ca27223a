"""Scripted expert for the wheeled env and the waypoint labels of recorded trajectories.

``WheeledExpert``: shortest path on the floor plan's room/door graph (networkx, edge weight =
centre -> door -> centre length) -> polyline (start, then for each door a point 1 m before and 1 m
after the doorway, then the goal point of the goal room) -> pure pursuit along the polyline
(look-ahead 0.6 m) giving (v, omega). It reads the floor plan and the robot pose (privileged for
an expert, which is allowed).

``future_waypoints(poses, t, num=8, stride=1)``: the training label of the VLA's waypoint head.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import networkx as nx
import numpy as np

from components.envs.floorplan import FloorPlan

V_MAX = 0.7
W_MAX = 1.5


def _forward_left(yaw: float, frame: str) -> tuple[np.ndarray, np.ndarray]:
    """Unit forward and left vectors in the pose's ground coordinates."""
    c, s = math.cos(yaw), math.sin(yaw)
    if frame == "xz":  # MiniWorld: forward = (cos, -sin) in (x, z); left = (-sin, -cos)
        return np.array([c, -s]), np.array([-s, -c])
    if frame == "xy":  # planar right-handed x/y, yaw counter-clockwise
        return np.array([c, s]), np.array([-s, c])
    raise ValueError(f"unknown frame {frame!r}; use 'xz' (MiniWorld pose) or 'xy'")


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
    fwd, left = _forward_left(float(poses[t, 2]), frame)
    d = poses[idx, :2] - poses[t, :2]
    dyaw = poses[idx, 2] - poses[t, 2]
    out = np.stack([d @ fwd, d @ left, np.cos(dyaw), np.sin(dyaw)], axis=1)
    return out.astype(np.float32)


def expert_waypoints(expert: "WheeledExpert", pose, dt: float, num: int = 8, stride: int = 1) -> np.ndarray:
    """The waypoints (as ``future_waypoints``) of the trajectory ``expert`` would drive from ``pose``.

    Rolls a copy of the expert out on the env's unicycle model (heading first, then the straight
    move, as ``WheeledEnv.step``) for ``num * stride`` steps of ``dt``; walls are not simulated
    (the expert's route keeps its clearance). ``expert`` itself is not advanced.
    """
    import copy

    ghost = copy.copy(expert)
    x, z, yaw = (float(v) for v in pose)
    poses = [(x, z, yaw)]
    for _ in range(num * stride):
        v, w = ghost.act((x, z, yaw))
        v = float(np.clip(v, 0.0, V_MAX))
        yaw += float(np.clip(w, -W_MAX, W_MAX)) * dt
        yaw = math.atan2(math.sin(yaw), math.cos(yaw))
        x, z = x + v * dt * math.cos(yaw), z - v * dt * math.sin(yaw)
        poses.append((x, z, yaw))
    return future_waypoints(np.array(poses), 0, num=num, stride=stride)


def plan_route(plan: FloorPlan, start_room: str, goal_room: str) -> list[str]:
    """Room sequence of the shortest route (by centre -> door -> centre length)."""
    return nx.shortest_path(plan.graph(), start_room, goal_room, weight="weight")


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
    """Pure-pursuit follower of the shortest room/door route to the goal room."""

    def __init__(self, plan: FloorPlan, lookahead: float = 0.6, v_max: float = V_MAX):
        self.plan = plan
        self.lookahead = lookahead
        self.v_max = v_max
        self.path: list[np.ndarray] = []
        self.seg = 0

    @classmethod
    def from_env(cls, env, **kw) -> "WheeledExpert":
        e = cls(env.unwrapped.plan, **kw)
        e.reset_from_env(env)
        return e

    def reset_from_env(self, env) -> None:
        u = env.unwrapped
        pose = u.pose
        start = self.plan.room_at(pose[0], pose[1]) or u.start_room
        self.reset(pose, start, u.goal_room, u.goal_xz)

    def reset(self, pose, start_room: str, goal_room: str, goal_xz=None) -> None:
        goal_xz = self.plan.room(goal_room).goal_point if goal_xz is None else goal_xz
        self.rooms = plan_route(self.plan, start_room, goal_room)
        pts = route_points(self.plan, self.rooms, goal_xz)
        start = np.asarray(pose[:2], dtype=np.float64)
        if len(pts) > 1 and np.linalg.norm(pts[0] - start) < 0.5:
            # already at the first approach point: start on the doorway line behind it instead
            u = (pts[1] - pts[0]) / max(np.linalg.norm(pts[1] - pts[0]), 1e-9)
            start = pts[0] - u * 0.5
        self.path = [start] + pts
        self.seg = 0

    def act(self, pose) -> np.ndarray:
        p = np.asarray(pose[:2], dtype=np.float64)
        yaw = float(pose[2])
        # advance along the polyline: project on the current segment
        while self.seg < len(self.path) - 2:
            a, b = self.path[self.seg], self.path[self.seg + 1]
            ab = b - a
            L = np.linalg.norm(ab)
            s = float((p - a) @ ab / L) if L > 1e-9 else L
            if s >= L - 0.05 or np.linalg.norm(p - b) < 0.3:
                self.seg += 1
            else:
                break
        a, b = self.path[self.seg], self.path[self.seg + 1]
        ab = b - a
        L = float(np.linalg.norm(ab))
        u = ab / L if L > 1e-9 else np.zeros(2)
        s = float(np.clip((p - a) @ u, 0.0, L))
        s_t = s + self.lookahead
        target = a + u * min(s_t, L)
        if s_t > L and self.seg < len(self.path) - 2:
            c = self.path[self.seg + 2]
            bc = c - b
            n = np.linalg.norm(bc)
            if n > 1e-9:
                target = b + bc / n * min(s_t - L, n)
        fwd, left = _forward_left(yaw, "xz")
        d = target - p
        alpha = math.atan2(float(d @ left), float(d @ fwd))
        dist_goal = float(np.linalg.norm(self.path[-1] - p))
        w = float(np.clip(2.5 * alpha, -W_MAX, W_MAX))
        if abs(alpha) > 0.6:
            v = 0.0  # turn in place first
        else:
            v = self.v_max * (1.0 - abs(alpha) / 0.6) ** 0.5
            if self.seg >= len(self.path) - 2:
                v = min(v, max(0.15, dist_goal))
        return np.array([v, w], dtype=np.float32)


def run_episode(env, seed: int, options: dict | None = None, record: bool = False):
    """One expert episode. Returns (success, steps, poses [T+1, 3] if record else None)."""
    obs, info = env.reset(seed=seed, options=options)
    expert = WheeledExpert.from_env(env)
    poses = [info["pose"]] if record else None
    steps, success = 0, bool(info["is_success"])
    while not success:
        obs, r, term, trunc, info = env.step(expert.act(info["pose"]))
        steps += 1
        success = bool(info["is_success"])
        if record:
            poses.append(info["pose"])
        if term or trunc:
            break
    return success, steps, (np.stack(poses) if record else None)


def measure_expert(env_id: str = "vla_stack/Wheeled-v0", seeds: Sequence[int] = range(100), **env_kwargs) -> dict:
    """Success rate of the expert over one episode per seed, and env steps/s (with RGB + depth)."""
    import gymnasium as gym

    import components.envs  # noqa: F401

    env = gym.make(env_id, **env_kwargs)
    seeds = list(seeds)
    succ, steps_list = [], []
    t0 = time.perf_counter()
    for s in seeds:
        ok, n, _ = run_episode(env, s)
        succ.append(ok)
        steps_list.append(n)
    dt = time.perf_counter() - t0
    env.close()
    total = int(sum(steps_list))
    return {
        "env_id": env_id,
        "env_kwargs": {k: str(v) for k, v in env_kwargs.items()},
        "episodes": len(seeds),
        "successes": int(sum(succ)),
        "success_rate": float(np.mean(succ)) if seeds else 0.0,
        "failed_seeds": [s for s, ok in zip(seeds, succ) if not ok],
        "mean_steps": float(np.mean(steps_list)) if seeds else 0.0,
        "steps": total,
        "steps_per_s": total / dt if dt > 0 else float("nan"),
        "seeds": seeds,
    }
