"""Wheeled (MiniWorld) env, floor plans and the wheeled expert."""

import os

os.environ.setdefault("PYGLET_HEADLESS", "true")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import gymnasium as gym
import networkx as nx
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import components.envs  # noqa: F401  (registers the ids)
from components.envs.floorplan import FLOORPLAN_DIR, FloorPlanError, list_floorplans, load_floorplan
from components.envs.wheeled_expert import WheeledExpert, future_waypoints, plan_route
from components.errors import UsageError

SMALL = (30, 40)


@pytest.mark.parametrize("env_id,kw", [("vla_stack/Wheeled-v0", {"floorplan": "three_rooms"}), ("vla_stack/WheeledHallway-v0", {})])
def test_check_env_and_contract(env_id, kw):
    env = gym.make(env_id, image_size=SMALL, **kw)
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert obs["images"]["front"].shape == (*SMALL, 3)
    assert obs["depth"].shape == SMALL and obs["depth"].dtype == np.float32
    assert 0.0 < float(obs["depth"].min()) < 100.0
    assert obs["state"].shape == (2,)
    assert info["pose"].shape == (3,) and info["pose"].dtype == np.float64
    assert info["instruction"] == env.unwrapped.instruction and info["instruction"].startswith("go to the ")
    assert isinstance(info["room"], str) and isinstance(info["is_success"], bool)
    obs, r, term, trunc, info = env.step(np.array([0.5, 0.2], dtype=np.float32))
    np.testing.assert_allclose(obs["state"], [0.5, 0.2])
    env.close()


def test_seeded_reset_reproducible():
    env = gym.make("vla_stack/Wheeled-v0", floorplan="office_small", image_size=SMALL)
    o1, i1 = env.reset(seed=3)
    o2, i2 = env.reset(seed=4)
    o3, i3 = env.reset(seed=3)
    np.testing.assert_array_equal(o1["images"]["front"], o3["images"]["front"])
    np.testing.assert_array_equal(i1["pose"], i3["pose"])
    assert i1["instruction"] == i3["instruction"]
    assert not np.array_equal(i1["pose"], i2["pose"])
    env.close()


def test_hallway_instruction_and_expert_reaches_goal():
    env = gym.make("vla_stack/WheeledHallway-v0", image_size=SMALL)
    episode = WheeledExpert(env.unwrapped.plan).record(env, seed=0)
    assert episode.instruction == env.unwrapped.instruction == "go to the end of the hallway"
    assert episode.success and episode.steps < 400
    x, z, _ = env.unwrapped.pose
    assert np.hypot(x - 10.0, z) <= 1.0
    assert episode.frames["pose"].shape == (episode.steps, 3)
    assert episode.frames["action"].shape == (episode.steps, 8, 4)
    env.close()


def test_expert_crosses_doors():
    env = gym.make("vla_stack/Wheeled-v0", floorplan="three_rooms", image_size=SMALL,
                   start_room="red room", goal_room="blue room")
    episode = WheeledExpert(env.unwrapped.plan).record(env, seed=0)
    assert episode.success
    rooms = {env.unwrapped.plan.room_at(x, z) for x, z, _ in episode.frames["pose"]}
    assert {"red room", "green room", "blue room"} <= rooms
    env.close()


def test_wheeled_env_has_only_the_front_camera():
    with pytest.raises(ValueError, match="one camera, 'front'"):
        gym.make("vla_stack/WheeledHallway-v0", image_size=SMALL, cameras=("front", "rear"))


def test_shipped_floorplans_and_graph():
    names = list_floorplans()
    assert "hallway" in names and len(names) >= 9
    for n in names:
        fp = load_floorplan(n)
        g = fp.graph()
        assert nx.is_connected(g), n
        for r in fp.rooms:
            assert fp.room_at(*r.centre) == r.name
    fp = load_floorplan("three_rooms")
    g = fp.graph()
    assert g.nodes["red room"]["centre"] == (3.0, 3.0)
    assert g.edges["red room", "green room"]["door"] == pytest.approx((6.5, 1.5))
    assert fp.room_at(6.5, 1.5) is None  # in the passage


def _write(tmp_path, text):
    p = tmp_path / "plan.yaml"
    p.write_text(text)
    return p


def test_validation_overlap(tmp_path):
    p = _write(tmp_path, "rooms:\n  - {name: a, x: [0, 6], z: [0, 5]}\n  - {name: b, x: [5, 9], z: [0, 5]}\ndoors: []\n")
    with pytest.raises(FloorPlanError, match=r"plan\.yaml: rooms\[1\] 'b'.*overlaps rooms\[0\] 'a'"):
        load_floorplan(p)


def test_validation_non_facing_door(tmp_path):
    p = _write(
        tmp_path,
        "rooms:\n  - {name: a, x: [0, 6], z: [0, 5]}\n  - {name: b, x: [7, 9], z: [6, 20]}\n"
        "doors:\n  - {between: [a, b], width: 1.2}\n",
    )
    with pytest.raises(FloorPlanError, match=r"plan\.yaml: doors\[0\] between 'a' and 'b': the rooms do not face each other"):
        load_floorplan(p)
    # walls face each other but overlap by less than the door width
    p = _write(
        tmp_path,
        "rooms:\n  - {name: a, x: [0, 6], z: [0, 5]}\n  - {name: b, x: [7, 9], z: [4.5, 20]}\n"
        "doors:\n  - {between: [a, b], width: 1.2}\n",
    )
    with pytest.raises(FloorPlanError, match=r"doors\[0\].*overlap by 0.50 m < width 1.2"):
        load_floorplan(p)


def test_validation_unknown_room_and_missing_field(tmp_path):
    p = _write(tmp_path, "rooms:\n  - {name: a, x: [0, 6], z: [0, 5]}\ndoors:\n  - {between: [a, garage], width: 1.2}\n")
    with pytest.raises(FloorPlanError, match=r"plan\.yaml: doors\[0\].*unknown room 'garage'"):
        load_floorplan(p)
    p = _write(tmp_path, "rooms:\n  - {name: a, x: [0, 6]}\n")
    with pytest.raises(FloorPlanError, match=r"plan\.yaml: rooms\[0\]: missing field 'z'"):
        load_floorplan(p)
    p = _write(tmp_path, "rooms:\n  - {name: a, x: [0, 6], z: [0, 5]}\n  - {name: b, x: [7, 9], z: [0, 5]}\ndoors:\n  - {between: [a, b]}\n")
    with pytest.raises(FloorPlanError, match=r"doors\[0\]: missing field 'width'"):
        load_floorplan(p)


def test_future_waypoints_straight_line():
    # MiniWorld pose (x, z, yaw): yaw = 0.3 means forward = (cos 0.3, -sin 0.3) in (x, z)
    yaw = 0.3
    s = np.arange(20) * 0.1
    poses = np.stack([2 + s * np.cos(yaw), 1 - s * np.sin(yaw), np.full_like(s, yaw)], axis=1)
    wp = future_waypoints(poses, t=5, num=8, stride=2)
    assert wp.shape == (8, 4)
    np.testing.assert_allclose(wp[:, 1], 0.0, atol=1e-6)
    np.testing.assert_allclose(wp[:, 2], 1.0, atol=1e-6)
    np.testing.assert_allclose(wp[:, 3], 0.0, atol=1e-6)
    np.testing.assert_allclose(wp[:, 0], [0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.4], atol=1e-5)  # clamped at T-1
    # a left turn puts points at positive y_left with positive sin
    poses2 = np.array([[0.0, 0.0, 0.0], [1.0, -1.0, np.pi / 2]])  # -z is the robot's left at yaw 0
    wp2 = future_waypoints(poses2, t=0, num=1)
    np.testing.assert_allclose(wp2[0], [1.0, 1.0, 0.0, 1.0], atol=1e-6)


# ------------------------------------------------------------------------------------ closed doors
NORTH_EAST = "{between: [north hall, east hall], width: 1.6}"
NORTH_WEST = "{between: [west hall, north hall], width: 1.6}"


def _loop_with_closed(tmp_path, door: str):
    """configs/floorplans/loop.yaml with ``door`` (its YAML line) closed."""
    text = (FLOORPLAN_DIR / "loop.yaml").read_text()
    assert door in text
    return _write(tmp_path, text.replace(door, door[:-1] + ", closed: true}"))


def test_closed_door_blocks_passage_and_set_door_reopens_it(tmp_path):
    env = gym.make("vla_stack/Wheeled-v0", floorplan=_loop_with_closed(tmp_path, NORTH_EAST), image_size=SMALL)
    u = env.unwrapped
    assert u.closed_doors == {frozenset({"north hall", "east hall"})}
    assert not u.plan.graph().has_edge("north hall", "east hall")
    facing_door = {"start_pose": (13.0, 0.8, -np.pi / 2), "goal_room": "south hall"}  # door at z = 2, heading +z
    obs, _ = env.reset(seed=0, options=facing_door)
    assert obs["depth"][SMALL[0] // 2, SMALL[1] // 2] < 1.3  # the camera sees the door 1.2 m ahead
    collided = []
    for _ in range(40):  # push at it at full speed
        obs, _, _, _, info = env.step(np.array([0.7, 0.0], dtype=np.float32))
        collided.append(info["collided"])
    assert info["pose"][1] < 2.0 - 0.4 + 0.05 and info["room"] == "north hall" and sum(collided) > 25  # radius 0.4
    assert u.set_door("north hall", "east hall", closed=False) and u.closed_doors == frozenset()
    for _ in range(40):
        obs, _, _, _, info = env.step(np.array([0.7, 0.0], dtype=np.float32))
    assert info["room"] == "east hall" and info["pose"][1] > 3.0
    env.reset(seed=0, options=facing_door)  # a reset restores the plan's doors
    assert u.closed_doors == {frozenset({"north hall", "east hall"})}
    env.close()


def test_door_does_not_close_on_the_robot():
    env = gym.make("vla_stack/Wheeled-v0", floorplan="loop", image_size=SMALL)
    u = env.unwrapped
    env.reset(seed=0, options={"start_pose": (13.0, 2.0, -np.pi / 2), "goal_room": "south hall"})  # in the doorway
    assert not u.set_door("north hall", "east hall", closed=True) and u.closed_doors == frozenset()
    with pytest.raises(FloorPlanError, match=r"loop\.yaml: no door between 'office' and 'courtyard'; doors are"):
        u.set_door("office", "courtyard")
    with pytest.raises(FloorPlanError, match=r"unknown room 'garage'"):
        u.set_door("garage", "office")
    env.close()


def test_expert_routes_around_a_closed_door(tmp_path):
    for door, avoided, taken in ((NORTH_EAST, "east hall", "west hall"), (NORTH_WEST, "west hall", "east hall")):
        plan = load_floorplan(_loop_with_closed(tmp_path, door))
        assert plan_route(plan, "office", "store room") == ["office", "north hall", taken, "south hall", "store room"]
    plan = load_floorplan(_loop_with_closed(tmp_path, NORTH_EAST))
    # closing the door of an env's episode is the same as closing it in the YAML
    assert plan_route(load_floorplan("loop"), "office", "store room", closed=[("east hall", "north hall")]) == \
        plan_route(plan, "office", "store room")
    env = gym.make("vla_stack/Wheeled-v0", floorplan=plan, image_size=SMALL, start_room="north hall",
                   goal_room="south hall")
    episode = WheeledExpert(plan).record(env, seed=1)
    rooms = {plan.room_at(x, z) for x, z, _ in episode.frames["pose"]}
    assert episode.success and "west hall" in rooms and "east hall" not in rooms
    env.close()


def test_no_open_route_is_a_usage_error():
    plan = load_floorplan("loop")
    with pytest.raises(UsageError, match=r"no open route from 'office' to 'courtyard'; closed doors: \['north hall-office'\]"):
        plan_route(plan, "office", "courtyard", closed=[("office", "north hall")])


def test_validation_closed_field(tmp_path):
    head = "rooms:\n  - {name: a, x: [0, 6], z: [0, 5]}\n  - {name: b, x: [6, 9], z: [0, 5]}\n"
    p = _write(tmp_path, head + "doors:\n  - {between: [a, b], width: 1.2, closed: 'yes please'}\n")
    with pytest.raises(FloorPlanError, match=r"plan\.yaml: doors\[0\] between 'a' and 'b': field 'closed' must be true or false"):
        load_floorplan(p)
    p = _write(tmp_path, head + "doors:\n  - {between: [a, b], width: 1.2, shut: true}\n")
    with pytest.raises(FloorPlanError, match=r"doors\[0\] between 'a' and 'b': unknown field\(s\) \['shut'\]"):
        load_floorplan(p)
    p = _write(tmp_path, head + "doors:\n  - {between: [a, b], width: 1.2, closed: true}\n")
    plan = load_floorplan(p)
    assert plan.doors[0].closed and plan.closed_doors == {frozenset({"a", "b"})}
    assert plan.graph().number_of_edges() == 0 and plan.graph(closed=[]).number_of_edges() == 1


def test_subgoal_env_state_follows_its_route_and_set_route_replaces_it():
    from components.envs.experts import env_spec
    from components.kinematics import to_robot_frame
    env = gym.make("vla_stack/WheeledNav-v0", floorplan="three_rooms", image_size=SMALL)
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=3)
    u = env.unwrapped
    assert obs["state"].shape == (6,) and env.observation_space.contains(obs)
    assert env_spec("vla_stack/WheeledNav-v0").state_dim == 6
    expert = WheeledExpert.from_env(env)
    assert [tuple(p) for p in u.route] == [tuple(p) for p in expert.path]  # the expert's own route
    x, y = to_robot_frame(info["subgoal"], info["pose"])
    np.testing.assert_allclose(obs["state"][2:], [x, y, x / np.hypot(x, y), y / np.hypot(x, y)], rtol=1e-5, atol=1e-5)
    seen, done = {tuple(info["subgoal"])}, False
    while not done:  # the expert drives the route; the state's subgoal moves on along it
        obs, _, term, trunc, info = env.step(expert.act(info["pose"]))
        seen.add(tuple(info["subgoal"]))
        done = term or trunc
    # ... in order, from the first (success in the goal room may come before its goal point's turn)
    assert info["is_success"] and len(seen) >= 3 and seen == {tuple(p) for p in u.route[1:1 + len(seen)]}
    env.reset(seed=3)
    u.set_route([[0.5, 0.5]])
    obs = u.observe()
    np.testing.assert_allclose(u.subgoal, [0.5, 0.5])
    np.testing.assert_allclose(obs["state"][2:4], to_robot_frame(np.array([0.5, 0.5]), u.pose), rtol=1e-5)
    with pytest.raises(ValueError, match="at least one"):
        u.set_route([])
    env.close()
