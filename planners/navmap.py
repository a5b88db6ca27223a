"""Maps of buildings from RGB-D: a tour records depth and poses, open3d integrates them into a point
cloud, which becomes an occupancy grid and a networkx graph of places; routes are A* over it.

The map comes from the depth images alone; the floor plan only drives the tour (room to room) and names
the places (each node's room), or a label file does for a map made elsewhere. Format and parameters:
docs/ARCHITECTURE.md, "Navigation".
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import networkx as nx
import numpy as np

from components.errors import VLAStackError, yaml_problem

MAP_FORMAT = "vla-stack-navmap/1"
GRAPH_FILE, GRID_FILE = "graph.json", "grid.npz"
FREE, OCCUPIED, UNKNOWN = 0, 1, -1


class MapError(VLAStackError, ValueError):
    """A map directory or label file that cannot be read, or does not fit what it is used with."""


class UnknownPlaceError(VLAStackError, ValueError):
    """A goal text that names none of the map's places."""


class NoRouteError(VLAStackError, RuntimeError):
    """No route reaches the place: no edge leads there, or every route is blocked."""


@dataclass
class MapConfig:
    resolution_m: float = 0.05     # occupancy grid cell
    voxel_m: float = 0.05          # point-cloud voxel size
    obstacle_min_m: float = 0.1    # points between these heights are obstacles
    obstacle_max_m: float = 1.5
    floor_max_m: float = 0.05      # points below this height are seen floor
    max_depth_m: float = 8.0       # farther depth readings are not integrated
    clearance_m: float = 0.35      # nodes and edges keep this far from obstacles (the robot: radius 0.4, slides along walls)
    node_spacing_m: float = 0.5    # one node per block of this size (at its most open free cell)
    edge_max_m: float = 1.2        # nodes closer than this are joined when the straight edge is free
    pull_clearance_m: float = 0.6  # subgoals skip nodes only along lines this far from obstacles
    close_cells: int = 3           # morphological closing of the seen floor (fills sparse far-floor speckle)


# ---- the tour ---------------------------------------------------------------------------------------
@dataclass
class Tour:
    """Depth frames with the camera pose of each, recorded while driving through a building."""
    depth: list[np.ndarray] = field(default_factory=list)     # [H, W] metres (z-distance)
    cam_pos: list[np.ndarray] = field(default_factory=list)   # [3] world (x, y up, z)
    yaw: list[float] = field(default_factory=list)
    trail: list[np.ndarray] = field(default_factory=list)     # robot (x, z) at every step
    fov_y_deg: float = 60.0
    steps: int = 0


def record_tour(env, seed: int = 0, every: int = 2, spin_steps: int | None = None,
                max_steps_per_room: int = 2000) -> Tour:
    """Drive a wheeled env through every room (breadth-first over the plan's doors, the scripted
    expert's pure pursuit between rooms) and turn a full circle in each, recording depth and poses."""
    from components.envs.wheeled_expert import WheeledExpert

    u = env.unwrapped
    obs, _ = env.reset(seed=seed)
    plan = u.plan
    agent = u.agent
    tour = Tour(fov_y_deg=float(agent.cam_fov_y))
    w_max = float(u.action_space.high[1])
    spin_steps = spin_steps or int(math.ceil(2 * math.pi / (w_max * u.dt))) + 2

    def step(action) -> None:
        nonlocal obs
        obs, *_ = u.step(np.asarray(action, dtype=np.float32))
        tour.steps += 1
        tour.trail.append(np.array([agent.pos[0], agent.pos[2]]))
        if tour.steps % every == 0:
            tour.depth.append(obs["depth"].copy())
            tour.cam_pos.append(np.asarray(agent.cam_pos, dtype=np.float64).copy())
            tour.yaw.append(float(agent.dir))

    start = plan.room_at(agent.pos[0], agent.pos[2]) or plan.rooms[0].name
    graph = plan.graph()
    order = list(nx.bfs_tree(graph, start)) if start in graph else [start]
    order += [r for r in plan.room_names if r not in order]
    for _ in range(spin_steps):
        step([0.0, w_max])
    current = start
    for room in order[1:]:
        expert = WheeledExpert(plan)
        try:
            expert.reset(u.pose, current, room, goal_xz=plan.room(room).centre)
        except Exception:  # noqa: BLE001 - a room no open door reaches is left unmapped
            continue
        for _ in range(max_steps_per_room):
            if math.dist(u.pose[:2], plan.room(room).centre) < 0.5:
                break
            step(expert.act(u.pose))
        current = plan.room_at(agent.pos[0], agent.pos[2]) or room
        for _ in range(spin_steps):
            step([0.0, w_max])
    return tour


# ---- point cloud and grid -----------------------------------------------------------------------------
def integrate(tour: Tour, cfg: MapConfig):
    """open3d point cloud (world frame, y up) of every depth frame, voxel-downsampled."""
    import open3d as o3d

    cloud = o3d.geometry.PointCloud()
    for depth, cam, yaw in zip(tour.depth, tour.cam_pos, tour.yaw):
        h, w = depth.shape
        fy = (h / 2) / math.tan(math.radians(tour.fov_y_deg) / 2)
        intr = o3d.camera.PinholeCameraIntrinsic(w, h, fy, fy, (w - 1) / 2, (h - 1) / 2)
        fwd = np.array([math.cos(yaw), 0.0, -math.sin(yaw)])
        right = np.array([math.sin(yaw), 0.0, math.cos(yaw)])
        down = np.array([0.0, -1.0, 0.0])
        rot = np.stack([right, down, fwd])  # world -> camera (x right, y down, z forward)
        extr = np.eye(4)
        extr[:3, :3] = rot
        extr[:3, 3] = -rot @ cam
        img = o3d.geometry.Image(np.ascontiguousarray(depth, dtype=np.float32))
        cloud += o3d.geometry.PointCloud.create_from_depth_image(img, intr, extr, depth_scale=1.0,
                                                                 depth_trunc=cfg.max_depth_m)
        if len(cloud.points) > 400_000:
            cloud = cloud.voxel_down_sample(cfg.voxel_m)
    return cloud.voxel_down_sample(cfg.voxel_m)


@dataclass
class Grid:
    """Occupancy ``[nz, nx]`` int8 (FREE, OCCUPIED, UNKNOWN); cell (i, j) has centre
    ``(origin_x + (j + .5) * res, origin_z + (i + .5) * res)``."""
    occupancy: np.ndarray
    origin: tuple[float, float]
    resolution: float
    clearance: np.ndarray | None = None  # metres from each cell to the nearest non-free cell

    def cell(self, xz) -> tuple[int, int]:
        return (int(math.floor((xz[1] - self.origin[1]) / self.resolution)),
                int(math.floor((xz[0] - self.origin[0]) / self.resolution)))

    def centre(self, i: int, j: int) -> np.ndarray:
        return np.array([self.origin[0] + (j + 0.5) * self.resolution, self.origin[1] + (i + 0.5) * self.resolution])

    def inside(self, i: int, j: int) -> bool:
        return 0 <= i < self.occupancy.shape[0] and 0 <= j < self.occupancy.shape[1]

    def line_free(self, a, b, clearance_m: float) -> bool:
        """Every cell on the straight segment a -> b keeps ``clearance_m`` from non-free cells."""
        n = max(2, int(math.ceil(math.dist(a, b) / (self.resolution / 2))) + 1)
        for t in np.linspace(0.0, 1.0, n):
            i, j = self.cell((a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])))
            if not self.inside(i, j) or self.clearance[i, j] < clearance_m:
                return False
        return True


def occupancy_grid(cloud, trail: Sequence[np.ndarray], cfg: MapConfig) -> Grid:
    """Floor points mark free cells, points at obstacle height occupied ones (occupied wins); the cells
    the robot drove over are free. Clearance is the distance transform of the free cells."""
    from scipy.ndimage import binary_closing

    pts = np.asarray(cloud.points)
    trail = np.asarray(trail, dtype=np.float64).reshape(-1, 2)
    xz = np.concatenate([pts[:, [0, 2]], trail]) if len(pts) else trail
    res = cfg.resolution_m
    lo = np.floor(xz.min(0) / res) * res - 4 * res
    hi = np.ceil(xz.max(0) / res) * res + 4 * res
    nx_, nz_ = int(round((hi[0] - lo[0]) / res)), int(round((hi[1] - lo[1]) / res))
    occ = np.full((nz_, nx_), UNKNOWN, dtype=np.int8)

    def cells(p):
        return (np.floor((p[:, 1] - lo[1]) / res).astype(int), np.floor((p[:, 0] - lo[0]) / res).astype(int))

    height = pts[:, 1]
    floor = pts[height < cfg.floor_max_m][:, [0, 2]]
    obst = pts[(height >= cfg.obstacle_min_m) & (height <= cfg.obstacle_max_m)][:, [0, 2]]
    occ[cells(floor)] = FREE
    radius_cells = int(math.ceil(0.3 / res))  # the robot's footprint along its trail
    for i, j in zip(*cells(trail)):
        occ[max(0, i - radius_cells):i + radius_cells + 1, max(0, j - radius_cells):j + radius_cells + 1][
            occ[max(0, i - radius_cells):i + radius_cells + 1, max(0, j - radius_cells):j + radius_cells + 1]
            == UNKNOWN] = FREE
    occ[cells(obst)] = OCCUPIED
    # far floor is seen sparsely: close the speckle of unseen cells between seen ones
    free = binary_closing(occ == FREE, iterations=cfg.close_cells) | (occ == FREE)
    occ[free & (occ == UNKNOWN)] = FREE
    return Grid(occ, (float(lo[0]), float(lo[1])), res, clearance_of(occ, res))


def clearance_of(occ: np.ndarray, res: float) -> np.ndarray:
    """Metres from each cell to the nearest cell that is not free."""
    from scipy.ndimage import distance_transform_edt
    return distance_transform_edt(occ == FREE) * res


# ---- the graph -------------------------------------------------------------------------------------------
def place_graph(grid: Grid, cfg: MapConfig, label_at=None) -> nx.Graph:
    """One node per ``node_spacing`` block at its most open free cell (if that keeps ``clearance``),
    edges between nodes within ``edge_max`` whose straight segment keeps the clearance;
    ``label_at(x, z)`` names each node's place. Only the largest connected part is kept."""
    block = max(1, int(round(cfg.node_spacing_m / grid.resolution)))
    g = nx.Graph()
    clear = grid.clearance
    nz_, nx_ = clear.shape
    for bi in range(0, nz_, block):
        for bj in range(0, nx_, block):
            sub = clear[bi:bi + block, bj:bj + block]
            k = int(np.argmax(sub))
            if sub.flat[k] < cfg.clearance_m:
                continue
            i, j = bi + k // sub.shape[1], bj + k % sub.shape[1]
            x, z = grid.centre(i, j)
            label = label_at(x, z) if label_at else None
            g.add_node(len(g), x=float(x), z=float(z), label=label or None)
    xy = np.array([[d["x"], d["z"]] for _, d in g.nodes(data=True)]).reshape(-1, 2)
    if len(xy):
        from scipy.spatial import cKDTree
        for a, b in cKDTree(xy).query_pairs(cfg.edge_max_m):
            if grid.line_free(xy[a], xy[b], cfg.clearance_m):
                g.add_edge(a, b, length=float(np.linalg.norm(xy[a] - xy[b])))
    if g.number_of_nodes():
        keep = max(nx.connected_components(g), key=len)
        g = nx.convert_node_labels_to_integers(g.subgraph(keep).copy())
    return g


# ---- the map -------------------------------------------------------------------------------------------
@dataclass
class NavMap:
    graph: nx.Graph
    grid: Grid
    config: MapConfig
    source: str = ""               # the floor plan (or label file) the places come from
    goals: dict[str, list[float]] = field(default_factory=dict)  # place -> goal point (x, z)
    mapping_s: float = 0.0
    _pos: dict = field(default_factory=dict, repr=False)

    @property
    def places(self) -> list[str]:
        return sorted({d["label"] for _, d in self.graph.nodes(data=True) if d.get("label")})

    def xz(self, node: int) -> np.ndarray:
        d = self.graph.nodes[node]
        return np.array([d["x"], d["z"]])

    # -- persistence
    def save(self, directory: str | Path) -> Path:
        """``graph.json`` (networkx node-link + format, config, goals) and ``grid.npz``, atomically."""
        from components.checkpoint_io import replace_directory

        directory = Path(directory)
        with replace_directory(directory) as tmp:
            data = nx.node_link_data(self.graph, edges="edges")
            data.update(format=MAP_FORMAT, source=self.source, goals=self.goals, mapping_s=self.mapping_s,
                        config=self.config.__dict__)
            (tmp / GRAPH_FILE).write_text(json.dumps(data, indent=1))
            np.savez_compressed(tmp / GRID_FILE, occupancy=self.grid.occupancy,
                                origin=np.asarray(self.grid.origin), resolution=np.asarray(self.grid.resolution))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "NavMap":
        directory = Path(directory)
        gpath, npath = directory / GRAPH_FILE, directory / GRID_FILE
        if not directory.is_dir():
            raise MapError(f"--map: map directory '{directory}' does not exist (make one with `vla-stack map`)")
        for p in (gpath, npath):
            if not p.is_file():
                raise MapError(f"{directory}: no {p.name}; a map directory holds {GRAPH_FILE} and {GRID_FILE} "
                               f"(written by `vla-stack map`)")
        try:
            data = json.loads(gpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MapError(f"{gpath}: not valid JSON ({e}); rewrite the map with `vla-stack map`") from None
        if not isinstance(data, dict) or data.get("format") != MAP_FORMAT:
            raise MapError(f"{gpath}: format {data.get('format') if isinstance(data, dict) else None!r}, expected "
                           f"{MAP_FORMAT!r}")
        try:
            graph = nx.node_link_graph(data, edges="edges")
            for n, d in graph.nodes(data=True):
                float(d["x"]), float(d["z"])
            config = MapConfig(**data["config"])
        except (KeyError, TypeError, ValueError, nx.NetworkXError) as e:
            raise MapError(f"{gpath}: malformed graph ({type(e).__name__}: {e}); rewrite the map") from None
        try:
            with np.load(npath) as z:
                occ, origin, res = z["occupancy"], z["origin"], float(z["resolution"])
        except Exception as e:  # noqa: BLE001 - any unreadable npz is the same user-facing problem
            raise MapError(f"{npath}: unreadable grid ({type(e).__name__}: {e}); rewrite the map") from None
        if occ.ndim != 2 or origin.shape != (2,) or not res > 0:
            raise MapError(f"{npath}: grid of shape {occ.shape}, origin {origin.tolist()}, resolution {res}: "
                           f"expected a 2-D occupancy, an (x, z) origin and a positive resolution")
        grid = Grid(occ.astype(np.int8), (float(origin[0]), float(origin[1])), res, clearance_of(occ, res))
        for n in graph.nodes:
            i, j = grid.cell((graph.nodes[n]["x"], graph.nodes[n]["z"]))
            if not grid.inside(i, j):
                raise MapError(f"{gpath}: node {n} lies outside the grid of {npath.name}: the two files come from "
                               f"different maps")
        return cls(graph, grid, config, str(data.get("source", "")), dict(data.get("goals", {})),
                   float(data.get("mapping_s", 0.0)))

    # -- places and routes
    def resolve_place(self, text: str) -> str:
        """The place a goal text names: "go to the kitchen", "Kitchen", "the archive room", "kitchen please"."""
        return resolve_place(text, self.places)

    def nearest_node(self, xz, free_line: bool = True, graph: nx.Graph | None = None) -> int:
        """The nearest node of ``graph`` (default the map's) with an edge left, preferring one reachable
        from ``xz`` by a straight free line."""
        graph = self.graph if graph is None else graph
        nodes = [n for n in graph.nodes if graph.degree(n) > 0]
        if not nodes:
            raise NoRouteError("the map has no connected nodes (was the tour recorded in this building?)")
        pts = np.array([self.xz(n) for n in nodes])
        order = np.argsort(np.linalg.norm(pts - np.asarray(xz)[:2], axis=1))
        if free_line:
            for k in order[:12]:
                if self.grid.line_free(np.asarray(xz)[:2], pts[k], self.config.clearance_m * 0.5):
                    return nodes[k]
        return nodes[order[0]]

    def goal_node(self, place: str) -> int:
        nodes = [n for n, d in self.graph.nodes(data=True) if d.get("label") == place]
        if not nodes:
            raise UnknownPlaceError(f"no node of the map is labelled {place!r}; places: {self.places}")
        target = np.asarray(self.goals.get(place) or np.mean([self.xz(n) for n in nodes], axis=0))
        return min(nodes, key=lambda n: float(np.linalg.norm(self.xz(n) - target)))

    def route(self, start_xz, place: str, blocked: set[tuple[int, int]] | None = None) -> "Route":
        """A* (Euclidean heuristic) from the node nearest ``start_xz`` to ``place``, avoiding ``blocked``
        edges; subgoals are the route's nodes with line-of-sight shortcuts, ending at the place's goal point."""
        goal = self.goal_node(place)
        g = self.graph
        if blocked:
            g = nx.restricted_view(self.graph, [], [e for e in blocked] + [(b, a) for a, b in blocked])
        start = self.nearest_node(start_xz, graph=g)
        try:
            nodes = self.astar(start, goal, g)
        except nx.NetworkXNoPath:
            why = "every route there is blocked" if blocked else "no edge of the map leads there"
            raise NoRouteError(f"no route to {place!r}: {why} ({len(blocked or ())} blocked edge(s))") from None
        return Route(place, nodes, self._subgoals(start_xz, nodes, place))

    def _subgoals(self, start_xz, nodes: list[int], place: str) -> list[np.ndarray]:
        pts = [self.xz(n) for n in nodes]
        if place in self.goals:
            end = np.asarray(self.goals[place], dtype=np.float64)
            if self.grid.line_free(pts[-1], end, self.config.clearance_m * 0.5):
                pts.append(end)
        out, here, k = [], np.asarray(start_xz, dtype=np.float64)[:2], 0
        clear = self.config.pull_clearance_m
        while k < len(pts):  # farthest point still in line of sight (string pulling)
            far = k
            for m in range(len(pts) - 1, k, -1):
                if self.grid.line_free(here, pts[m], clear):
                    far = m
                    break
            out.append(pts[far])
            here, k = pts[far], far + 1
        return out

    def astar(self, a: int, b: int, graph: nx.Graph | None = None) -> list[int]:
        """A* over ``graph`` (default the map's) by edge length with the Euclidean heuristic."""
        if len(self._pos) != self.graph.number_of_nodes():  # node positions never change once built
            self._pos = {n: (d["x"], d["z"]) for n, d in self.graph.nodes(data=True)}
        pos = self._pos
        gx, gz = pos[b]
        return nx.astar_path(self.graph if graph is None else graph, a, b, weight="length",
                             heuristic=lambda u, _: math.hypot(pos[u][0] - gx, pos[u][1] - gz))

    def length(self, nodes: list[int]) -> float:
        return float(sum(np.linalg.norm(self.xz(a) - self.xz(b)) for a, b in zip(nodes, nodes[1:])))

    def edge_near(self, a_xz, b_xz) -> tuple[int, int] | None:
        """The route edge a blocked segment a -> b corresponds to: the edge whose midpoint is nearest to it."""
        best, dist = None, float("inf")
        a, b = np.asarray(a_xz), np.asarray(b_xz)
        ab = b - a
        for u, v in self.graph.edges:
            mid = (self.xz(u) + self.xz(v)) / 2
            t = float(np.clip((mid - a) @ ab / max(float(ab @ ab), 1e-9), 0, 1))
            d = float(np.linalg.norm(a + t * ab - mid))
            if d < dist:
                best, dist = (u, v), d
        return best

    def render(self, path: str | Path, route: "Route | None" = None, robot=None) -> Path:
        """Top-down PNG of :func:`render_image`."""
        from PIL import Image

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(render_image(self, route, robot)).save(path)
        return path


def render_image(m: NavMap, route=None, robot=None, waypoints=None, max_side: int = 640,
                 trail=None) -> np.ndarray:
    """Top-down RGB uint8: free white, occupied black, unknown grey; graph blue, places in red text,
    route orange, trail green, robot (x, z, yaw) a green arrow, predicted waypoints (x, z) magenta."""
    from PIL import Image, ImageDraw

    occ = m.grid.occupancy
    scale = max(1, int(max_side // max(occ.shape)))
    img = np.full(occ.shape + (3,), 150, np.uint8)
    img[occ == FREE] = 255
    img[occ == OCCUPIED] = 0
    im = Image.fromarray(img).resize((occ.shape[1] * scale, occ.shape[0] * scale), Image.NEAREST)
    d = ImageDraw.Draw(im)
    g = m.grid

    def px(xz):
        return ((xz[0] - g.origin[0]) / g.resolution * scale, (xz[1] - g.origin[1]) / g.resolution * scale)

    for a, b in m.graph.edges:
        d.line([px(m.xz(a)), px(m.xz(b))], fill=(150, 180, 230), width=1)
    for n in m.graph.nodes:
        x, y = px(m.xz(n))
        d.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(40, 90, 200))
    for place in m.places:
        pts = np.array([m.xz(n) for n, dd in m.graph.nodes(data=True) if dd.get("label") == place])
        x, y = px(pts.mean(0))
        d.text((x - 3 * len(place), y), place, fill=(170, 0, 0))
    if trail is not None and len(trail) > 1:
        d.line([px(p) for p in trail], fill=(0, 160, 0), width=2)
    if route is not None and route.subgoals:
        pts = [px(p) for p in route.subgoals]
        if robot is not None:
            pts = [px(robot[:2])] + pts
        d.line(pts, fill=(255, 140, 0), width=2)
        for x, y in pts[1:]:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], outline=(255, 140, 0), width=2)
    if waypoints is not None:
        for p in np.asarray(waypoints).reshape(-1, 2):
            x, y = px(p)
            d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(220, 0, 220))
    if robot is not None:
        x, y = px(robot[:2])
        r = 0.4 / g.resolution * scale
        d.ellipse([x - r, y - r, x + r, y + r], outline=(0, 140, 0), width=2)
        d.line([(x, y), (x + 1.5 * r * math.cos(robot[2]), y - 1.5 * r * math.sin(robot[2]))], fill=(0, 140, 0), width=2)
    return np.asarray(im)


@dataclass
class Route:
    place: str
    nodes: list[int]
    subgoals: list[np.ndarray]


# ---- goal text ---------------------------------------------------------------------------------------
_FILLER = {"go", "to", "the", "a", "an", "please", "drive", "navigate", "head", "move", "take", "me", "get",
           "into", "in", "toward", "towards", "room", "area", "now", "let's", "lets", "us", "find", "reach", "of"}


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower().replace("_", " "))


def resolve_place(text: str, places: Sequence[str], aliases: dict[str, str] | None = None) -> str:
    """A place of ``places`` that ``text`` names, tolerant of case, articles, filler words and plurals;
    an unknown place lists the known ones."""
    import difflib

    if not places:
        raise UnknownPlaceError("the map has no named places (record it in a floor plan, or give a label file)")
    words = [w for w in _words(text) if w not in _FILLER]
    candidates = {p: p for p in places}
    for alias, p in (aliases or {}).items():
        candidates[alias] = p
    key = " ".join(words)
    for name, p in candidates.items():
        nw = [w for w in _words(name) if w not in _FILLER] or _words(name)
        if key == " ".join(nw) or key.rstrip("s") == " ".join(nw).rstrip("s"):
            return p
    for name, p in candidates.items():  # every word of the place's name appears in the text
        nw = [w for w in _words(name) if w not in _FILLER] or _words(name)
        if nw and all(w in words or w + "s" in words or w.rstrip("s") in words for w in nw):
            return p
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.8)
    if close:
        return candidates[close[0]]
    raise UnknownPlaceError(f"unknown place {text!r}; known places: {sorted(places)}")


def load_labels(path: str | Path):
    """A label file for a map made elsewhere: YAML ``places: [{name, x: [lo, hi], z: [lo, hi]}, ...]``
    -> ``label_at(x, z)``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise MapError(f"--labels: label file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise MapError(f"{path}: {yaml_problem(e)}") from None
    places = data.get("places") if isinstance(data, dict) else None
    if not isinstance(places, list) or not places:
        raise MapError(f"{path}: expected 'places: [{{name: ..., x: [lo, hi], z: [lo, hi]}}, ...]'")
    rects = []
    for k, p in enumerate(places):
        try:
            rects.append((str(p["name"]), tuple(map(float, p["x"])), tuple(map(float, p["z"]))))
        except (KeyError, TypeError, ValueError):
            raise MapError(f"{path}: places[{k}] must have name, x: [lo, hi], z: [lo, hi]; got {p!r}") from None

    def label_at(x: float, z: float) -> str | None:
        for name, (x0, x1), (z0, z1) in rects:
            if x0 <= x <= x1 and z0 <= z <= z1:
                return name
        return None
    return label_at


def build_map(env, seed: int = 0, cfg: MapConfig | None = None, label_at=None) -> NavMap:
    """Tour ``env``'s building, integrate the depth, grid it and place the graph; labels from the
    env's floor plan unless ``label_at`` is given."""
    cfg = cfg or MapConfig()
    t0 = time.perf_counter()
    plan = env.unwrapped.plan
    tour = record_tour(env, seed)
    cloud = integrate(tour, cfg)
    grid = occupancy_grid(cloud, tour.trail, cfg)
    graph = place_graph(grid, cfg, label_at or plan.room_at)
    goals = {} if label_at else {r.name: [float(v) for v in r.goal_point] for r in plan.rooms}
    return NavMap(graph, grid, cfg, str(plan.source), goals, time.perf_counter() - t0)


def lattice_map(n: int, spacing_m: float = 0.5) -> NavMap:
    """A ``n x n`` lattice of nodes on an empty floor (for benchmarks of route planning)."""
    res = spacing_m / 2
    occ = np.zeros((2 * n + 2, 2 * n + 2), dtype=np.int8)
    occ[0, :] = occ[-1, :] = occ[:, 0] = occ[:, -1] = OCCUPIED
    grid = Grid(occ, (0.0, 0.0), res, clearance_of(occ, res))
    g = nx.grid_2d_graph(n, n)
    g = nx.convert_node_labels_to_integers(g, label_attribute="ij")
    for k, d in g.nodes(data=True):
        i, j = d.pop("ij")
        d.update(x=float((2 * j + 1.5) * res), z=float((2 * i + 1.5) * res), label=None)
    for a, b in g.edges:
        g.edges[a, b]["length"] = spacing_m
    g.nodes[n * n - 1]["label"] = "corner"
    return NavMap(g, grid, MapConfig(clearance_m=0.0, node_spacing_m=spacing_m))


def check_map_fits(m: NavMap, plan_source: str, where: str) -> None:
    """A saved map used with another floor plan than the one it was recorded in is refused."""
    if m.source and Path(m.source).name != Path(plan_source).name:
        raise MapError(f"{where}: the map was recorded in {Path(m.source).name}, not in {Path(plan_source).name}; "
                       f"map this floor plan with `vla-stack map` or pass the matching --floorplan")


def describe(m: NavMap) -> dict[str, Any]:
    return {"nodes": m.graph.number_of_nodes(), "edges": m.graph.number_of_edges(), "places": m.places,
            "mapping_s": round(m.mapping_s, 2), "source": m.source}
