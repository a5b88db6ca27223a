"""Seeded random floor plans (the schema of ``configs/floorplans``) for navigation training data: more
building shapes than the hand-written plans, so a local planner does not learn one plan's doors.

Two kinds: ``spine`` (a corridor with rooms on both sides, sometimes an end room and doors between
neighbouring rooms) and ``grid`` (rows x columns of rooms joined by a random spanning tree of doors plus
a few extra ones). Walls touch or stand 0.5 m apart; doors are 1.0-1.6 m wide at a random place along
the shared wall. Every plan passes :func:`~components.envs.floorplan.parse_floorplan`.
"""
from __future__ import annotations

import numpy as np

ROOM_NAMES = ["office", "lab", "kitchen", "library", "archive", "lobby", "workshop", "studio", "pantry",
              "storage room", "meeting room", "print room", "lounge", "classroom", "gym", "laundry",
              "bedroom", "bathroom", "study", "dining room", "living room", "garage", "reception", "server room",
              "mail room", "nursery", "cellar", "music room", "art room", "break room"]


def _door(rng, a: str, b: str, overlap: tuple[float, float]) -> dict | None:
    lo, hi = overlap
    width = float(np.round(rng.uniform(1.0, 1.6), 1))
    if hi - lo < width + 0.4:
        return None
    at = float(np.round(rng.uniform(lo + width / 2 + 0.2, hi - width / 2 - 0.2), 2))
    return {"between": [a, b], "width": width, "at": at}


def _spine(rng, names) -> dict:
    length = float(rng.uniform(14, 28))
    width = float(rng.choice([1.8, 2.0, 2.2, 2.4, 2.6]))
    wall = float(rng.choice([0.0, 0.5]))
    rooms = [{"name": "corridor", "x": [0.0, round(length, 2)], "z": [0.0, width]}]
    doors = []
    for side in (1, -1):
        x = float(rng.uniform(0.5, 2.0))
        prev = None
        while True:
            w = float(rng.uniform(3.0, 7.0))
            if x + w > length - 0.5:
                break
            depth = float(rng.uniform(3.5, 6.0))
            z = [width + wall, width + wall + depth] if side == 1 else [-wall - depth, -wall]
            room = {"name": names.pop(), "x": [round(x, 2), round(x + w, 2)], "z": [round(z[0], 2), round(z[1], 2)]}
            rooms.append(room)
            d = _door(rng, room["name"], "corridor", (room["x"][0], room["x"][1]))
            if d:
                doors.append(d)
            if prev is not None and rng.random() < 0.3:  # a door between neighbours: a second way round
                gap = room["x"][0] - prev["x"][1]
                zo = (max(room["z"][0], prev["z"][0]), min(room["z"][1], prev["z"][1]))
                if gap <= 2.0:
                    d = _door(rng, prev["name"], room["name"], zo)
                    if d:
                        doors.append(d)
            prev = room
            x += w + float(rng.choice([0.0, 0.5, 1.0, 1.5]))
    if rng.random() < 0.6:  # an end room beyond the corridor's far end
        depth = float(rng.uniform(3.5, 5.5))
        span = float(rng.uniform(width + 1.0, 6.0))
        z0 = float(rng.uniform(width - span + 0.3, -0.3)) if span > width + 0.6 else 0.0
        room = {"name": names.pop(), "x": [round(length + wall, 2), round(length + wall + depth, 2)],
                "z": [round(z0, 2), round(z0 + span, 2)]}
        rooms.append(room)
        d = _door(rng, "corridor", room["name"], (0.0, width))
        if d is None:
            d = {"between": ["corridor", room["name"]], "width": 1.0}
        doors.append(d)
    return {"rooms": rooms, "doors": doors, "max_episode_steps": 700}


def _grid(rng, names) -> dict:
    rows, cols = int(rng.integers(2, 4)), int(rng.integers(2, 4))
    wall = float(rng.choice([0.0, 0.5]))
    widths = rng.uniform(3.0, 6.5, cols)
    heights = rng.uniform(3.0, 6.0, rows)
    xs = np.concatenate([[0.0], np.cumsum(widths + wall)])
    zs = np.concatenate([[0.0], np.cumsum(heights + wall)])
    cell = {}
    rooms = []
    for r in range(rows):
        for c in range(cols):
            name = names.pop()
            cell[r, c] = name
            rooms.append({"name": name, "x": [round(float(xs[c]), 2), round(float(xs[c] + widths[c]), 2)],
                          "z": [round(float(zs[r]), 2), round(float(zs[r] + heights[r]), 2)]})
    by = {rm["name"]: rm for rm in rooms}
    edges = [((r, c), (r, c + 1)) for r in range(rows) for c in range(cols - 1)]
    edges += [((r, c), (r + 1, c)) for r in range(rows - 1) for c in range(cols)]
    order = rng.permutation(len(edges))
    parent = {k: k for k in cell}

    def root(k):
        while parent[k] != k:
            k = parent[k]
        return k

    doors = []
    for i in order:
        a, b = edges[i]
        tree = root(a) != root(b)
        if not tree and rng.random() > 0.25:
            continue
        ra, rb = by[cell[a]], by[cell[b]]
        axis = "x" if a[0] == b[0] else "z"
        other = "z" if axis == "x" else "x"
        ov = (max(ra[other][0], rb[other][0]), min(ra[other][1], rb[other][1]))
        d = _door(rng, cell[a], cell[b], ov)
        if d is None:
            continue
        doors.append(d)
        parent[root(a)] = root(b)
    keep = {root(k) for k in cell}
    if len(keep) > 1:  # rooms a door could not join: leave them out
        main = max(keep, key=lambda g: sum(root(k) == g for k in cell))
        out = {cell[k] for k in cell if root(k) != main}
        rooms = [rm for rm in rooms if rm["name"] not in out]
        doors = [d for d in doors if not (set(d["between"]) & out)]
    return {"rooms": rooms, "doors": doors, "max_episode_steps": 500}


def random_floorplan(seed: int, kind: str | None = None) -> dict:
    """A floor-plan mapping (``parse_floorplan``'s input) drawn from ``seed``; ``kind`` spine | grid
    (default: drawn too)."""
    rng = np.random.default_rng(seed)
    kind = kind or str(rng.choice(["spine", "grid"]))
    names = [str(n) for n in rng.permutation(ROOM_NAMES)]
    plan = _spine(rng, names) if kind == "spine" else _grid(rng, names)
    return {"name": f"gen_{kind}_{seed}", "description": f"random {kind} floor plan, seed {seed}", **plan}
