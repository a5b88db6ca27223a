"""Floor plans for the wheeled (MiniWorld) environment, loaded from YAML.

Schema (metres; MiniWorld's ground plane is x/z, y is up)::

    name: office_small                # optional, defaults to the file stem
    description: free text            # optional
    max_door_gap: 2.0                 # optional: largest wall gap a door may bridge (default 2.0)
    max_episode_steps: 600            # optional: episode length for large plans (env default 400)
    rooms:                            # axis-aligned rectangles, interiors must not overlap
      - {name: kitchen, x: [0, 6], z: [0, 5]}
      - {name: hallway, x: [7, 9], z: [0, 20],
         label: "end of the hallway",   # optional: text used in "go to the {label}" (default name)
         goal: [8, 19]}                 # optional: goal point inside the room (default its centre)
    doors:                            # between rooms whose facing walls overlap
      - {between: [kitchen, hallway], width: 1.2,
         at: 2.5,                     # optional: door centre along the wall (default: overlap middle)
         closed: true}                # optional: the door is shut (default false): built as a wall,
                                      # left out of ``graph()`` and so of every route

Two rooms *face each other* when a wall of one is parallel to a wall of the other, the gap between
them is in ``[0, max_door_gap]`` and the walls overlap (along the wall) by at least the door width.
A door across a non-zero gap becomes a short passage (MiniWorld's ``connect_rooms`` does the same).
A closed door is the plan's initial state; ``WheeledEnv.set_door`` opens or closes doors during an
episode (docs/ARCHITECTURE.md, Navigation).

Every validation error is a :class:`FloorPlanError` naming the file and the offending item.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from components.config_files import config_path
from components.errors import VLAStackError, yaml_problem

FLOORPLAN_DIR = config_path("floorplans")
MIN_ROOM_SIZE = 1.0  # the robot has a 0.4 m radius


class FloorPlanError(VLAStackError, ValueError):
    """A floor plan that cannot be built; the message names the file and the offending item."""


@dataclass(frozen=True)
class Room:
    name: str
    x: tuple[float, float]
    z: tuple[float, float]
    label: str = ""
    goal: tuple[float, float] | None = None

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.x[0] + self.x[1]) / 2.0, (self.z[0] + self.z[1]) / 2.0)

    @property
    def goal_point(self) -> tuple[float, float]:
        return self.goal if self.goal is not None else self.centre

    @property
    def area(self) -> float:
        return (self.x[1] - self.x[0]) * (self.z[1] - self.z[0])

    @property
    def text(self) -> str:
        return self.label or self.name

    def contains(self, x: float, z: float, margin: float = 0.0) -> bool:
        return (
            self.x[0] + margin <= x <= self.x[1] - margin
            and self.z[0] + margin <= z <= self.z[1] - margin
        )


@dataclass(frozen=True)
class Door:
    """A door between rooms ``a`` and ``b``.

    ``axis`` is the ground axis the wall normal points along ("x": the walls are x = const,
    "z": the walls are z = const). ``wall_a``/``wall_b`` are the coordinates of the two facing walls,
    ``span`` the door extent along the wall, ``centre`` the (x, z) middle of the doorway.
    """

    a: str
    b: str
    width: float
    axis: str
    wall_a: float
    wall_b: float
    span: tuple[float, float]
    a_low: bool = True  # room a lies on the low-coordinate side of the doorway (along ``axis``)
    closed: bool = False  # shut in the plan's initial state (YAML ``closed: true``)

    @property
    def key(self) -> frozenset[str]:
        """The unordered pair of rooms, the identity of a door (one door per pair)."""
        return frozenset((self.a, self.b))

    @property
    def along(self) -> float:
        return (self.span[0] + self.span[1]) / 2.0

    @property
    def centre(self) -> tuple[float, float]:
        mid = (self.wall_a + self.wall_b) / 2.0
        return (mid, self.along) if self.axis == "x" else (self.along, mid)

    @property
    def gap(self) -> float:
        return abs(self.wall_b - self.wall_a)

    def passage_rect(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """(x-range, z-range) of the passage between the two walls (zero thickness if touching)."""
        lo, hi = sorted((self.wall_a, self.wall_b))
        if self.axis == "x":
            return (lo, hi), self.span
        return self.span, (lo, hi)

    def crossing_points(self, from_room: str, clearance: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
        """Points ``clearance`` m before and after the doorway, for a robot leaving ``from_room``."""
        if from_room not in (self.a, self.b):
            raise ValueError(f"room {from_room!r} is not an end of door {self.a}-{self.b}")
        w_from, w_to = (self.wall_a, self.wall_b) if from_room == self.a else (self.wall_b, self.wall_a)
        # direction of travel along the axis (walls coincide when the rooms touch: use the sides)
        s = 1.0 if (from_room == self.a) == self.a_low else -1.0
        before, after = w_from - s * clearance, w_to + s * clearance
        if self.axis == "x":
            return np.array([before, self.along]), np.array([after, self.along])
        return np.array([self.along, before]), np.array([self.along, after])


@dataclass
class FloorPlan:
    name: str
    rooms: list[Room]
    doors: list[Door]
    description: str = ""
    source: str = "<memory>"
    max_episode_steps: int | None = None  # optional episode length suggested by the plan
    _by_name: dict[str, Room] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self._by_name = {r.name: r for r in self.rooms}

    def room(self, name: str) -> Room:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(
                f"{self.source}: unknown room {name!r}; rooms are {[r.name for r in self.rooms]}"
            ) from None

    @property
    def room_names(self) -> list[str]:
        return [r.name for r in self.rooms]

    def room_at(self, x: float, z: float) -> str | None:
        """Name of the room containing (x, z) (walls included), None in a door passage / outside."""
        for r in self.rooms:
            if r.contains(x, z):
                return r.name
        return None

    def door_between(self, a: str, b: str) -> Door:
        for d in self.doors:
            if {d.a, d.b} == {a, b}:
                return d
        for rn in (a, b):
            if rn not in self._by_name:
                raise FloorPlanError(f"{self.source}: unknown room {rn!r}; rooms are {self.room_names}")
        doors = [f"{d.a}-{d.b}" for d in self.doors]
        raise FloorPlanError(f"{self.source}: no door between {a!r} and {b!r}; doors are {doors}")

    @property
    def closed_doors(self) -> frozenset[frozenset[str]]:
        """Keys (``Door.key``) of the doors the plan declares ``closed: true``."""
        return frozenset(d.key for d in self.doors if d.closed)

    def graph(self, closed=None):
        """networkx Graph of the open doors: nodes = rooms (``centre``, ``goal``, ``x``, ``z``,
        ``label``, ``area``), edges = doors (``door`` = door centre (x, z), ``width``, ``index`` into
        ``doors``, ``weight`` = path length centre -> door -> centre).

        ``closed``: the doors to leave out, as (a, b) pairs in any order; None = the plan's own
        ``closed_doors`` (an env passes its current door state, ``WheeledEnv.closed_doors``).
        """
        import networkx as nx

        shut = self.closed_doors if closed is None else {frozenset(p) for p in closed}
        g = nx.Graph(name=self.name)
        for r in self.rooms:
            g.add_node(r.name, centre=r.centre, goal=r.goal_point, x=r.x, z=r.z, label=r.text, area=r.area)
        for i, d in enumerate(self.doors):
            if d.key in shut:
                continue
            c = np.asarray(d.centre)
            w = float(
                np.linalg.norm(c - np.asarray(self.room(d.a).centre))
                + np.linalg.norm(c - np.asarray(self.room(d.b).centre))
            )
            g.add_edge(d.a, d.b, door=d.centre, width=d.width, index=i, weight=w)
        return g

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return (
            min(r.x[0] for r in self.rooms),
            max(r.x[1] for r in self.rooms),
            min(r.z[0] for r in self.rooms),
            max(r.z[1] for r in self.rooms),
        )


# ---------------------------------------------------------------------------------------- parsing
def _interval(value: Any, where: str, key: str) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise FloorPlanError(f"{where}: field {key!r} must be a list [min, max], got {value!r}")
    try:
        lo, hi = float(value[0]), float(value[1])
    except (TypeError, ValueError):
        raise FloorPlanError(f"{where}: field {key!r} must hold numbers, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi - lo < MIN_ROOM_SIZE:
        raise FloorPlanError(
            f"{where}: field {key!r} = {value!r} must have min < max with size >= {MIN_ROOM_SIZE} m"
        )
    return lo, hi


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return min(a[1], b[1]) - max(a[0], b[0])


def _facing(ra: Room, rb: Room, max_gap: float):
    """All (axis, wall_a, wall_b, overlap_interval) for which ra and rb face each other."""
    out = []
    for axis, ia, ib, other_a, other_b in (("x", ra.x, rb.x, ra.z, rb.z), ("z", ra.z, rb.z, ra.x, rb.x)):
        ov = (max(other_a[0], other_b[0]), min(other_a[1], other_b[1]))
        if ov[1] - ov[0] <= 0:
            continue
        if 0 <= ib[0] - ia[1] <= max_gap:  # b after a
            out.append((axis, ia[1], ib[0], ov, True))
        elif 0 <= ia[0] - ib[1] <= max_gap:  # a after b
            out.append((axis, ia[0], ib[1], ov, False))
    return out


def parse_floorplan(data: Any, source: str = "<memory>", name: str | None = None) -> FloorPlan:
    """Validate a floor-plan mapping (already parsed YAML) and build a :class:`FloorPlan`."""
    if not isinstance(data, dict):
        raise FloorPlanError(f"{source}: a floor plan must be a mapping with 'rooms' and 'doors'")
    if "rooms" not in data:
        raise FloorPlanError(f"{source}: missing field 'rooms'")
    raw_rooms = data["rooms"]
    if not isinstance(raw_rooms, list) or not raw_rooms:
        raise FloorPlanError(f"{source}: 'rooms' must be a non-empty list")
    max_gap = float(data.get("max_door_gap", 2.0))

    rooms: list[Room] = []
    for i, rr in enumerate(raw_rooms):
        where = f"{source}: rooms[{i}]"
        if not isinstance(rr, dict):
            raise FloorPlanError(f"{where}: must be a mapping with name, x, z")
        for key in ("name", "x", "z"):
            if key not in rr:
                raise FloorPlanError(f"{where}: missing field {key!r}")
        rname = str(rr["name"])
        where = f"{source}: rooms[{i}] {rname!r}"
        unknown = set(rr) - {"name", "x", "z", "label", "goal"}
        if unknown:
            raise FloorPlanError(f"{where}: unknown field(s) {sorted(unknown)}")
        if any(r.name == rname for r in rooms):
            raise FloorPlanError(f"{where}: duplicate room name {rname!r}")
        x = _interval(rr["x"], where, "x")
        z = _interval(rr["z"], where, "z")
        goal = None
        if rr.get("goal") is not None:
            g = rr["goal"]
            if not isinstance(g, (list, tuple)) or len(g) != 2:
                raise FloorPlanError(f"{where}: field 'goal' must be [x, z], got {g!r}")
            goal = (float(g[0]), float(g[1]))
            if not (x[0] + 0.5 <= goal[0] <= x[1] - 0.5 and z[0] + 0.5 <= goal[1] <= z[1] - 0.5):
                raise FloorPlanError(f"{where}: goal {list(goal)} is not inside the room (0.5 m margin)")
        room = Room(name=rname, x=x, z=z, label=str(rr.get("label", "") or ""), goal=goal)
        for j, other in enumerate(rooms):
            if _overlap(room.x, other.x) > 1e-9 and _overlap(room.z, other.z) > 1e-9:
                raise FloorPlanError(
                    f"{where} (x={list(x)}, z={list(z)}) overlaps rooms[{j}] {other.name!r} "
                    f"(x={list(other.x)}, z={list(other.z)})"
                )
        rooms.append(room)

    by_name = {r.name: r for r in rooms}
    raw_doors = data.get("doors") or []
    if not isinstance(raw_doors, list):
        raise FloorPlanError(f"{source}: 'doors' must be a list")
    doors: list[Door] = []
    for i, dd in enumerate(raw_doors):
        where = f"{source}: doors[{i}]"
        if not isinstance(dd, dict):
            raise FloorPlanError(f"{where}: must be a mapping with between, width")
        for key in ("between", "width"):
            if key not in dd:
                raise FloorPlanError(f"{where}: missing field {key!r}")
        between = dd["between"]
        if not isinstance(between, (list, tuple)) or len(between) != 2:
            raise FloorPlanError(f"{where}: field 'between' must name two rooms, got {between!r}")
        a, b = str(between[0]), str(between[1])
        where = f"{source}: doors[{i}] between {a!r} and {b!r}"
        unknown = set(dd) - {"between", "width", "at", "closed"}
        if unknown:
            raise FloorPlanError(f"{where}: unknown field(s) {sorted(unknown)}; a door has between, width, at, closed")
        for rn in (a, b):
            if rn not in by_name:
                raise FloorPlanError(f"{where}: unknown room {rn!r}; rooms are {list(by_name)}")
        if a == b:
            raise FloorPlanError(f"{where}: a door must join two different rooms")
        if any({d.a, d.b} == {a, b} for d in doors):
            raise FloorPlanError(f"{where}: duplicate door (only one door per pair of rooms)")
        width = float(dd["width"])
        if width < 0.9:
            raise FloorPlanError(f"{where}: width {width} m is too narrow for the robot (>= 0.9 m)")
        ra, rb = by_name[a], by_name[b]
        faces = _facing(ra, rb, max_gap)
        if not faces:
            raise FloorPlanError(
                f"{where}: the rooms do not face each other (need parallel walls at most "
                f"{max_gap} m apart that overlap along the wall; {a} x={list(ra.x)} z={list(ra.z)}, "
                f"{b} x={list(rb.x)} z={list(rb.z)})"
            )
        axis, wall_a, wall_b, ov, a_low = faces[0]
        if ov[1] - ov[0] < width - 1e-9:
            raise FloorPlanError(
                f"{where}: the rooms do not face each other over the door width: their facing walls "
                f"overlap by {ov[1] - ov[0]:.2f} m < width {width} m"
            )
        at = dd.get("at")
        centre = (ov[0] + ov[1]) / 2.0 if at is None else float(at)
        span = (centre - width / 2.0, centre + width / 2.0)
        if span[0] < ov[0] - 1e-9 or span[1] > ov[1] + 1e-9:
            raise FloorPlanError(
                f"{where}: door at {centre} (width {width}) leaves the shared wall {list(ov)}"
            )
        closed = dd.get("closed", False)
        if not isinstance(closed, bool):
            raise FloorPlanError(f"{where}: field 'closed' must be true or false, got {closed!r}")
        door = Door(a=a, b=b, width=width, axis=axis, wall_a=wall_a, wall_b=wall_b, span=span, a_low=a_low,
                    closed=closed)
        if door.gap > 1e-9:
            px, pz = door.passage_rect()
            for r in rooms:
                if r.name not in (a, b) and _overlap(px, r.x) > 1e-9 and _overlap(pz, r.z) > 1e-9:
                    raise FloorPlanError(f"{where}: the passage between the rooms crosses room {r.name!r}")
        doors.append(door)

    return FloorPlan(
        name=str(data.get("name") or name or Path(source).stem),
        rooms=rooms,
        doors=doors,
        description=str(data.get("description", "") or ""),
        source=source,
        max_episode_steps=(int(data["max_episode_steps"]) if data.get("max_episode_steps") else None),
    )


def resolve_floorplan_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise FloorPlanError(f"floor plan file not found: {p}")
        return p
    cand = FLOORPLAN_DIR / f"{name_or_path}.yaml"
    if not cand.exists():
        raise FloorPlanError(
            f"unknown floor plan {str(name_or_path)!r}: no {cand}; available: {list_floorplans()}"
        )
    return cand


def load_floorplan(name_or_path: str | Path) -> FloorPlan:
    """Load a floor plan by name (``configs/floorplans/<name>.yaml``) or by path."""
    path = resolve_floorplan_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise FloorPlanError(f"{path}: invalid YAML: {yaml_problem(e)}") from None
    return parse_floorplan(data, source=str(path), name=path.stem)


def list_floorplans() -> list[str]:
    return sorted(p.stem for p in FLOORPLAN_DIR.glob("*.yaml"))
