"""RGB-D maps of floor plans: the place graph stays off the walls and names every room; routes,
goal texts, save/load and their errors (planners/navmap.py)."""
import json

import gymnasium as gym
import numpy as np
import pytest

import components.envs  # noqa: F401
from planners.navmap import MapError, NavMap, NoRouteError, UnknownPlaceError, build_map, lattice_map, resolve_place


@pytest.fixture(scope="module")
def three_rooms():
    env = gym.make("vla_stack/Wheeled-v0", floorplan="three_rooms")
    m = build_map(env, seed=0)
    walls = np.asarray(env.unwrapped.wall_segs)[:, :, [0, 2]]
    plan = env.unwrapped.plan
    env.close()
    return m, walls, plan


def crosses(a, b, walls) -> bool:
    """Does segment a-b properly intersect any wall segment (2-D, x/z)?"""
    def orient(p, q, r):
        return np.sign((q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1]) - (q[..., 1] - p[..., 1]) * (r[..., 0] - p[..., 0]))
    p, q = walls[:, 0], walls[:, 1]
    a, b = np.broadcast_to(a, p.shape), np.broadcast_to(b, p.shape)
    return bool(np.any((orient(a, b, p) * orient(a, b, q) < 0) & (orient(p, q, a) * orient(p, q, b) < 0)))


def test_map_labels_every_room_and_no_edge_crosses_a_wall(three_rooms):
    m, walls, plan = three_rooms
    assert m.places == sorted(plan.room_names)
    assert m.graph.number_of_nodes() > 100 and m.mapping_s > 0
    import networkx as nx
    assert nx.is_connected(m.graph)
    bad = [(u, v) for u, v in m.graph.edges if crosses(m.xz(u), m.xz(v), walls)]
    assert not bad, f"{len(bad)} edges cross walls"


def test_route_between_rooms_passes_the_doors_without_crossing_walls(three_rooms):
    m, walls, plan = three_rooms
    r = m.route(plan.room("red room").centre, "blue room")
    pts = [np.asarray(plan.room("red room").centre)] + r.subgoals
    assert not any(crosses(a, b, walls) for a, b in zip(pts, pts[1:]))
    assert plan.room_at(*pts[-1]) == "blue room"
    assert {plan.room_at(*p) for p in pts} >= {"red room", "green room", "blue room"}


@pytest.mark.parametrize("text", ["go to the blue room", "Blue Room", "the blue room please", "blue", "BLUE rooms"])
def test_goal_texts_resolve(three_rooms, text):
    assert three_rooms[0].resolve_place(text) == "blue room"


def test_unknown_place_lists_the_known_ones(three_rooms):
    with pytest.raises(UnknownPlaceError, match=r"unknown place 'the kitchen'; known places: \['blue room', 'green room', 'red room'\]"):
        three_rooms[0].resolve_place("the kitchen")
    assert resolve_place("kitchen please", ["kitchen", "archive room"]) == "kitchen"
    assert resolve_place("the archive room", ["kitchen", "archive room"]) == "archive room"


def test_no_route_when_every_way_is_blocked(three_rooms):
    m, _, plan = three_rooms
    blue = {n for n, d in m.graph.nodes(data=True) if d["label"] == "blue room"}
    cut = {(u, v) for u, v in m.graph.edges if (u in blue) != (v in blue)}
    with pytest.raises(NoRouteError, match=r"no route to 'blue room': every route there is blocked"):
        m.route(plan.room("red room").centre, "blue room", blocked=cut)


def test_save_load_round_trip_and_bad_map_files(three_rooms, tmp_path):
    m = three_rooms[0]
    m.save(tmp_path / "map")
    back = NavMap.load(tmp_path / "map")
    assert back.places == m.places and back.graph.number_of_edges() == m.graph.number_of_edges()
    np.testing.assert_array_equal(back.grid.occupancy, m.grid.occupancy)
    start = three_rooms[2].room("red room").centre
    assert [p.tolist() for p in back.route(start, "blue room").subgoals] == \
           [p.tolist() for p in m.route(start, "blue room").subgoals]
    with pytest.raises(MapError, match="does not exist"):
        NavMap.load(tmp_path / "nope")
    (tmp_path / "map" / "graph.json").write_text("{not json")
    with pytest.raises(MapError, match=r"graph.json: not valid JSON"):
        NavMap.load(tmp_path / "map")
    m.save(tmp_path / "map")
    data = json.loads((tmp_path / "map" / "graph.json").read_text())
    data["nodes"][0]["x"] = 1e4  # a graph from another map than the grid beside it
    (tmp_path / "map" / "graph.json").write_text(json.dumps(data))
    with pytest.raises(MapError, match="outside the grid.*different maps"):
        NavMap.load(tmp_path / "map")
    (tmp_path / "map" / "grid.npz").unlink()
    with pytest.raises(MapError, match="no grid.npz"):
        NavMap.load(tmp_path / "map")


def test_route_on_a_lattice_is_the_manhattan_shortest():
    m = lattice_map(20)
    r = m.route(m.xz(0), "corner")
    assert m.length(r.nodes) == pytest.approx(2 * 19 * 0.5)
