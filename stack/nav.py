"""``vla-stack map``, ``route`` and ``nav``: map a building from RGB-D, plan routes of subgoals over its
place graph, and drive them in the wheeled simulator (docs/ARCHITECTURE.md, "Navigation")."""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

os.environ.setdefault("PYGLET_HEADLESS", "true")

import numpy as np  # noqa: E402

from components.errors import UsageError  # noqa: E402

MODES = ("graph+follower", "graph+vla", "vla")
ENV_ID = "vla_stack/Wheeled-v0"


def _plan(floorplan: str):
    from components.envs.floorplan import load_floorplan
    return load_floorplan(floorplan)


def _env(plan, goal_room: str | None = None, scenario=None, max_steps: int | None = None):
    import gymnasium as gym

    import components.envs  # noqa: F401
    limit = {"max_steps": max_steps, "max_episode_steps": max_steps} if max_steps else {}
    env = gym.make(ENV_ID, floorplan=plan, goal_room=goal_room, **limit)
    if scenario is not None and scenario.events:
        from planners.scenario import ScenarioEnv
        env = ScenarioEnv(env, scenario)
    return env


def _load_or_build(plan, map_dir: str | None, seed: int):
    """The saved map at ``map_dir`` (checked against the plan), else a new one (saved there if given)."""
    from planners.navmap import NavMap, build_map, check_map_fits
    if map_dir and Path(map_dir).exists():
        m = NavMap.load(map_dir)
        check_map_fits(m, plan.source, f"--map {map_dir}")
        return m, False
    env = _env(plan)
    try:
        m = build_map(env, seed=seed)
    finally:
        env.close()
    if map_dir:
        m.save(map_dir)
    return m, True


def floorplans(out: str, count: int = 24, seed: int = 1000, kind: str | None = None) -> list[str]:
    """Write seeded random floor plans (a corridor with rooms along it, or a grid of rooms;
    ``components/envs/floorplan_gen.py``) as YAML files of the floor-plan schema: ``out/gen_00.yaml`` ...
    from seeds ``seed`` ... ``seed + count - 1``. Navigation training data comes from such plans.

    Args:
        out: directory to write to (created).
        count: number of plans.
        seed: seed of the first plan.
        kind: spine | grid (default: drawn per plan).
    """
    import yaml

    from components.envs.floorplan import parse_floorplan
    from components.envs.floorplan_gen import random_floorplan
    from stack.results import write_text
    if count < 1:
        raise UsageError(f"--count must be >= 1, got {count}")
    if kind not in (None, "spine", "grid"):
        raise UsageError(f"--kind: expected spine or grid, got {kind!r}")
    paths = []
    for i in range(count):
        data = random_floorplan(seed + i, kind)
        parse_floorplan(data, source=data["name"])  # every plan written is valid
        paths.append(str(write_text(yaml.safe_dump(data, sort_keys=False), Path(out) / f"gen_{i:02d}.yaml")))
    print(f"{count} floor plans in {out}/ (seeds {seed}-{seed + count - 1})")
    return paths


def map(floorplan: str, out: str, seed: int = 0, png: str | None = None) -> dict:  # noqa: A001 - the command's name
    """Map a building: tour every room recording RGB-D, integrate it with open3d, build the occupancy grid
    and the place graph, save them to ``out`` (graph.json + grid.npz).

    Args:
        floorplan: a floor-plan YAML (any path of the schema) or the name of one under configs/floorplans.
        out: the map directory to write (replaced atomically).
        seed: seed of the tour's start.
        png: also write a top-down image of the map here.
    """
    from planners.navmap import build_map, describe
    plan = _plan(floorplan)
    env = _env(plan)
    try:
        m = build_map(env, seed=seed)
    finally:
        env.close()
    m.save(out)
    if png:
        m.render(png)
    info = describe(m)
    print(f"map {plan.name}: {info['nodes']} nodes, {info['edges']} edges, places {info['places']}, "
          f"{info['mapping_s']:.1f} s -> {out}")
    return info


def route(map: str, goal: str, start: str | None = None) -> dict:  # noqa: A002
    """Plan a route on a saved map and print its subgoals.

    Args:
        map: a map directory (written by ``vla-stack map``).
        goal: the goal in words ("go to the kitchen", "Kitchen", "the archive room").
        start: "X,Z" metres where the route starts (default: the first node).
    """
    from planners.navmap import NavMap
    m = NavMap.load(map)
    place = m.resolve_place(goal)
    if start is not None:
        try:
            xz = np.array([float(v) for v in str(start).split(",")])
            assert xz.shape == (2,)
        except (ValueError, AssertionError):
            raise UsageError(f"--start: expected X,Z in metres (e.g. 1.5,2.0), got {start!r}") from None
    else:
        xz = m.xz(next(iter(m.graph.nodes)))
    t0 = time.perf_counter()
    r = m.route(xz, place)
    ms = (time.perf_counter() - t0) * 1e3
    out = {"place": place, "nodes": len(r.nodes), "length_m": m.length(r.nodes), "plan_ms": ms,
           "subgoals": [[round(float(v), 3) for v in p] for p in r.subgoals]}
    print(f"route to {place}: {len(r.subgoals)} subgoals, {out['length_m']:.1f} m of graph, {ms:.1f} ms")
    for p in out["subgoals"]:
        print(f"  {p[0]:.2f}, {p[1]:.2f}")
    return out


def geodesic_length(plan, start_xz, in_goal, radius: float = 0.4, res: float = 0.1) -> float:
    """Shortest collision-free path length (m) for a disc of ``radius`` from ``start_xz`` into the region
    where ``in_goal(X, Z)`` (arrays) holds, in the floor plan itself (rooms and open doors rasterized at
    ``res``, 16-connected Dijkstra, within ~3 % of the continuous shortest path): the SPL reference,
    independent of any map."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    x0, x1, z0, z1 = plan.bounds
    nx_, nz_ = int(math.ceil((x1 - x0) / res)) + 1, int(math.ceil((z1 - z0) / res)) + 1
    xs, zs = x0 + (np.arange(nx_) + 0.5) * res, z0 + (np.arange(nz_) + 0.5) * res
    X, Z = np.meshgrid(xs, zs)
    free = np.zeros(X.shape, bool)
    for r in plan.rooms:
        free |= (X >= r.x[0] + radius) & (X <= r.x[1] - radius) & (Z >= r.z[0] + radius) & (Z <= r.z[1] - radius)
    for d in plan.doors:
        if d.closed:
            continue
        (px0, px1), (pz0, pz1) = d.passage_rect()
        if d.axis == "x":
            px0, px1, pz0, pz1 = px0 - radius - res, px1 + radius + res, pz0 + radius, pz1 - radius
        else:
            px0, px1, pz0, pz1 = px0 + radius, px1 - radius, pz0 - radius - res, pz1 + radius + res
        free |= (X >= px0) & (X <= px1) & (Z >= pz0) & (Z <= pz1)
    idx = -np.ones(free.shape, int)
    idx[free] = np.arange(int(free.sum()))
    rows, cols, w = [], [], []
    for di, dj in ((0, 1), (1, 0), (1, 1), (1, -1), (1, 2), (2, 1), (1, -2), (2, -1)):
        a = idx[max(0, -di):nz_ - max(0, di), max(0, -dj):nx_ - max(0, dj)]
        b = idx[max(0, di):nz_ + min(0, di) or None, max(0, dj):nx_ + min(0, dj) or None]
        ok = (a >= 0) & (b >= 0)
        rows.append(a[ok]), cols.append(b[ok]), w.append(np.full(int(ok.sum()), res * math.hypot(di, dj)))
    n = int(free.sum())
    g = coo_matrix((np.concatenate(w), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsr()

    def nearest(p):
        d = (X - p[0]) ** 2 + (Z - p[1]) ** 2
        d[~free] = np.inf
        return idx.flat[int(np.argmin(d))]

    dist = dijkstra(g, directed=False, indices=nearest(start_xz))
    target = free & in_goal(X, Z)
    best = float(np.min(dist[idx[target]])) if target.any() else float("inf")
    return best if np.isfinite(best) else float("nan")


def success_region(plan, env):
    """``in_goal(X, Z)`` for the env's success test: inside the goal room (its wall margin), and within the
    success radius of the goal point where the room has one."""
    from components.envs.wheeled import WALL_MARGIN
    room = plan.room(env.goal_room)
    gx, gz = env.goal_xz

    def in_goal(X, Z):
        inside = ((X >= room.x[0] + WALL_MARGIN) & (X <= room.x[1] - WALL_MARGIN)
                  & (Z >= room.z[0] + WALL_MARGIN) & (Z <= room.z[1] - WALL_MARGIN))
        if room.goal is not None:
            inside &= (X - gx) ** 2 + (Z - gz) ** 2 <= env.success_radius ** 2
        return inside
    return in_goal


class _Trace:
    """Poses, collisions and frames of an episode, seen through a gym wrapper."""

    def __init__(self, env, on_frame=None):
        import gymnasium as gym

        trace = self

        class Wrapper(gym.Wrapper):
            def step(self, action):
                obs, r, term, trunc, info = self.env.step(action)
                trace.record(obs, info)
                return obs, r, term, trunc, info

        self.env = Wrapper(env)
        self.on_frame = on_frame
        self.poses: list[np.ndarray] = []
        self.collisions = 0

    def record(self, obs, info) -> None:
        self.poses.append(np.asarray(info["pose"], dtype=np.float64))
        self.collisions += bool(info.get("collided", False))
        if self.on_frame:
            self.on_frame(obs, info)


def nav(floorplan: str, goal: str, map: str | None = None, policy: str | None = None,  # noqa: A002
        mode: str = "graph+follower", episodes: int = 1, seed: int = 0, json: str | None = None,
        video: str | None = None, scenario: str | None = None, max_steps: int | None = None,
        map_seed: int = 0, recovery_steps: int = 20) -> dict:
    """Go to a named place of a building: map it (or load a saved map), plan a route of subgoals over
    its place graph, drive it, and replan around blocked edges (a closed door).

    Args:
        floorplan: a floor-plan YAML (any path of the schema) or the name of one under configs/floorplans.
        goal: the goal in words ("go to the kitchen", "Kitchen", "the archive room"), or "*": episode i
            goes to the plan's room i mod N (an evaluation over every room).
        map: a map directory: loaded if it exists, else made and saved there (default: made, not saved).
        policy: checkpoint directory (modes graph+vla and vla).
        mode: graph+follower (the route's subgoals by pure pursuit, no VLA), graph+vla (the VLA predicts
            8 waypoints toward each subgoal) or vla (the VLA alone with the goal in words, no graph).
        episodes: episodes; episode i starts from seed ``seed + i`` (a random start room and pose).
        seed: seed of the first episode.
        json: write the result here.
        video: write an mp4 of the first episode: the camera and a top-down inset (graph, route, robot).
        scenario: door events: "ROOM_A-ROOM_B@STEP" (close that door at that step; several joined by ";")
            or a scenario YAML file.
        max_steps: cap on env steps per episode (default: the floor plan's episode length).
        map_seed: seed of the mapping tour.
        recovery_steps: graph+vla: when the policy's waypoints collide (a segment judged blocked by
            collisions), pure pursuit drives this many steps back onto the route's line before the edge
            is blocked, once per segment; 0 blocks at once. Chosen on validation plans (docs/RESULTS.md).
    """
    from planners.scenario import load_scenario
    from stack.results import wilson_interval, write_json

    if mode not in MODES:
        raise UsageError(f"--mode: expected one of {list(MODES)}, got {mode!r}")
    if episodes < 1:
        raise UsageError(f"--episodes must be >= 1, got {episodes}")
    if recovery_steps < 0:
        raise UsageError(f"--recovery_steps must be >= 0 (0: no recovery), got {recovery_steps}")
    plan = _plan(floorplan)
    sc = load_scenario(scenario, plan, max_steps) if scenario else None
    pol = None
    if mode in ("graph+vla", "vla"):
        pol = _wheeled_policy(policy, mode)
    from planners.navmap import NoRouteError, resolve_place
    if goal.strip() == "*":  # every room in turn: episode i goes to room i mod N (an evaluation sweep)
        places = [plan.room_names[i % len(plan.room_names)] for i in range(episodes)]
    else:
        places = [resolve_place(goal, plan.room_names, {r.text: r.name for r in plan.rooms})] * episodes
    m = None
    if mode != "vla":
        m, _ = _load_or_build(plan, map, map_seed)
        for place in dict.fromkeys(places):
            if place not in m.places:
                raise NoRouteError(f"no route to {place!r}: the map of {plan.name} has no node in it (no open "
                                   f"door leads there, or the tour could not enter it); mapped places: {m.places}")
    place = places[0] if len(set(places)) == 1 else "*"
    records = []
    writer = None
    if video:
        from stack.results import VideoWriter
        writer = VideoWriter(video, fps=10)
    from tqdm import tqdm
    bar = tqdm(range(episodes), desc=f"nav {plan.name} ({mode})", unit="ep", dynamic_ncols=True)
    try:
        for i in bar:
            records.append(_episode(plan, m, places[i], mode, pol, seed + i, sc, max_steps,
                                    writer if i == 0 else None, recovery_steps))
            k = sum(r["success"] for r in records)
            bar.set_postfix_str(f"success {k}/{len(records)}")
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    k = sum(r["success"] for r in records)
    result = {
        "env": ENV_ID, "floorplan": str(plan.source), "goal": goal, "place": place, "mode": mode,
        "policy": str(policy) if policy else None, "map": str(map) if map else None,
        "episodes": len(records), "successes": k, "success_rate": k / len(records),
        "ci95": list(wilson_interval(k, len(records))),
        "spl": float(np.mean([r["spl"] for r in records])),
        "oracle_success_rate": float(np.mean([r["oracle_success"] for r in records])),
        "collisions": int(sum(r["collisions"] for r in records)),
        "path_length_m": float(np.mean([r["path_length_m"] for r in records])),
        "shortest_path_length_m": float(np.mean([r["shortest_path_length_m"] for r in records])),
        "replans": int(sum(r["replans"] for r in records)),
        "recoveries": int(sum(r["recoveries"] for r in records)),
        "recovery_steps": recovery_steps if mode == "graph+vla" else 0,
        "seeds": [seed + i for i in range(episodes)],
        "scenario": scenario, "max_steps": max_steps,
        "mapping_s": m.mapping_s if m is not None else None,
        "video": str(writer.path) if writer is not None and writer.frames else None,
        "per_episode": records,
    }
    if json:
        write_json(result, json)
    lo, hi = result["ci95"]
    print(f"nav {plan.name} -> {place} ({mode}): {k}/{len(records)} success ({result['success_rate']:.2f}, 95% CI "
          f"[{lo:.2f}, {hi:.2f}]), SPL {result['spl']:.2f}, {result['collisions']} collision steps, "
          f"{result['replans']} replans")
    return result


def _wheeled_policy(policy: str | None, mode: str):
    from components.errors import CheckpointNotFoundError
    from components.policy import Policy
    if policy is None:
        raise UsageError(f"--mode {mode} needs --policy DIR (a checkpoint with the wheeled embodiment)")
    if not Path(policy).is_dir():
        raise CheckpointNotFoundError(f"--policy: checkpoint directory '{policy}' does not exist")
    pol = Policy.from_pretrained(policy)
    need = "wheeled_nav" if mode == "graph+vla" else "wheeled"
    if need not in pol.embodiments:
        what = ("the wheeled base with a subgoal in its state, which graph+vla feeds the route's subgoals"
                if need == "wheeled_nav" else "the wheeled base")
        raise UsageError(f"--mode {mode}: the policy {policy} has no embodiment {need!r} ({what}); it has "
                         f"{pol.embodiments}. Use --mode graph+follower"
                         + (" or --mode vla" if need == "wheeled_nav" and "wheeled" in pol.embodiments else ""))
    return pol


def _episode(plan, m, place, mode, pol, seed, sc, max_steps, writer, recovery_steps: int = 0) -> dict:
    from planners.navigate import RouteConfig, follow_route

    env = _env(plan, place, sc, max_steps)
    frames = None
    if writer is not None:
        frames = _Frames(writer, m)
    trace = _Trace(env, frames)
    try:
        obs, info = trace.env.reset(seed=seed)
        u = env.unwrapped
        start = np.asarray(info["pose"], dtype=np.float64)
        trace.poses.append(start)
        replans = 0
        history: list[dict] = []
        policy_ms: list[float] = []
        recoveries = recovery_driven = 0
        if mode == "vla":
            from planners.episode import PolicyDecider, run_episode
            spec = pol.processor.embodiments["wheeled"]
            rec = run_episode(trace.env, PolicyDecider(pol, "wheeled"), spec, seed, max_steps=max_steps)
            success, steps, status = rec.success, rec.steps, rec.end
            policy_ms = rec.policy_ms
        else:
            from planners.navmap import NoRouteError
            blocked: set[tuple[int, int]] = set()
            r = m.route(start[:2], place)
            if frames is not None:
                frames.route = r

            def replan(pose, seg):
                nonlocal r, replans
                ahead = np.asarray(pose[:2]) + 0.6 * np.array([math.cos(pose[2]), -math.sin(pose[2])])
                blocked.update(_edges_near(m, ahead))
                replans += 1
                history.append({"step": seg.step, "reason": seg.reason, "at": [round(float(v), 2) for v in pose[:2]]})
                try:
                    r = m.route(pose[:2], place, blocked)
                except NoRouteError as e:
                    history[-1]["no_route"] = str(e)
                    return None
                if frames is not None:
                    frames.route = r
                return [list(p) for p in r.subgoals]

            # sliding along a door jamb is not a blocked door: that is what no progress and depth detect
            cfg = RouteConfig(max_steps=max_steps, max_collisions=18,
                              recovery_steps=recovery_steps if mode == "graph+vla" else 0)
            decider = None
            if mode == "graph+vla":
                from planners.navigate import PolicyWaypointDecider
                decider = PolicyWaypointDecider(pol, info["instruction"], seed)
            res = follow_route(trace.env, r.subgoals, obs, info, decider=decider, replan=replan, config=cfg)
            success, steps, status = res.success, res.steps, res.status
            recoveries, recovery_driven = res.recoveries, res.recovery_steps
            if decider is not None:
                policy_ms = decider.policy_ms
        poses = np.array(trace.poses)
        length = float(np.sum(np.linalg.norm(np.diff(poses[:, :2], axis=0), axis=1))) if len(poses) > 1 else 0.0
        goal = np.asarray(u.goal_xz)
        shortest = geodesic_length(plan, start[:2], success_region(plan, u))
        oracle = bool(np.min(np.linalg.norm(poses[:, :2] - goal, axis=1)) <= u.success_radius) or bool(success)
        spl = float(success) * shortest / max(length, shortest, 1e-9)
        return {"seed": seed, "goal": place, "success": bool(success), "oracle_success": oracle, "spl": spl, "steps": int(steps),
                "end": status, "collisions": trace.collisions, "path_length_m": length,
                "shortest_path_length_m": shortest, "replans": replans, "blocked": history,
                "start": [float(v) for v in start], "start_room": plan.room_at(start[0], start[1]),
                "recoveries": recoveries, "recovery_steps_driven": recovery_driven, "decisions": len(policy_ms),
                "policy_ms_p50": float(np.median(policy_ms)) if policy_ms else None}
    finally:
        env.close()


def _edges_near(m, point, radius: float = 0.6) -> set[tuple[int, int]]:
    """Graph edges passing within ``radius`` of where the robot got stuck (just ahead of it): the ones a
    closed door or an obstacle there cuts."""
    out = set()
    p = np.asarray(point)
    for u, v in m.graph.edges:
        a, b = m.xz(u), m.xz(v)
        ab = b - a
        t = float(np.clip((p - a) @ ab / max(float(ab @ ab), 1e-9), 0.0, 1.0))
        if np.linalg.norm(a + t * ab - p) <= radius:
            out.add((u, v))
    return out


class _Frames:
    """Video frames: the robot's camera with a top-down inset of the map, the route and the trail."""

    def __init__(self, writer, m):
        self.writer, self.m, self.route, self.trail = writer, m, None, []

    def __call__(self, obs, info) -> None:
        from PIL import Image

        from planners.navmap import render_image
        pose = np.asarray(info["pose"], dtype=np.float64)
        self.trail.append(pose[:2])
        cam = np.asarray(obs["images"]["front"])
        cam = np.asarray(Image.fromarray(cam).resize((320, 240), Image.NEAREST))
        if self.m is None:
            frame = cam
        else:
            top = render_image(self.m, self.route, pose, trail=self.trail, max_side=240)
            h = 240
            top = np.asarray(Image.fromarray(top).resize((max(1, int(top.shape[1] * h / top.shape[0])), h)))
            frame = np.concatenate([cam, top], axis=1)
        if frame.shape[1] % 2:
            frame = frame[:, :-1]
        self.writer.write(np.ascontiguousarray(frame))
