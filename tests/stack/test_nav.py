"""`vla-stack map`, `route` and `nav` end to end in the wheeled simulator: a door closed on the route
mid-episode is noticed, its edge blocked, and the goal reached another way."""
import json

import numpy as np
import pytest

from components.errors import UsageError
from stack.nav import map as map_building, nav, route


@pytest.fixture(scope="module")
def loop_map(tmp_path_factory):
    out = tmp_path_factory.mktemp("nav") / "loop_map"
    info = map_building("loop", str(out), png=str(out.parent / "loop.png"))
    assert (out.parent / "loop.png").stat().st_size > 1000
    return out, info


def test_map_and_route_commands(loop_map):
    out, info = loop_map
    assert info["places"] == sorted(["north hall", "east hall", "south hall", "west hall", "courtyard", "office",
                                     "store room"])
    r = route(str(out), "go to the store room", start="5,-3")
    assert r["place"] == "store room" and len(r["subgoals"]) >= 3 and r["length_m"] > 15


def test_a_door_closed_on_the_route_is_noticed_and_routed_around(loop_map, tmp_path):
    # seed 0 starts in the office; the route to the store room goes west: close that way at step 100
    res = nav("loop", "the store room", map=str(loop_map[0]), seed=0, scenario="south hall-west hall@100",
              max_steps=1200, json=str(tmp_path / "nav.json"))
    ep = res["per_episode"][0]
    assert ep["start_room"] == "office"
    assert ep["success"] and res["replans"] >= 1 and ep["replans"] >= 1
    assert ep["blocked"][0]["reason"] == "obstacle" and ep["blocked"][0]["step"] > 100
    assert ep["path_length_m"] > ep["shortest_path_length_m"]  # the way round is longer
    saved = json.loads((tmp_path / "nav.json").read_text())
    for key in ("success_rate", "ci95", "spl", "oracle_success_rate", "collisions", "path_length_m",
                "shortest_path_length_m", "replans", "per_episode", "seeds", "mapping_s"):
        assert key in saved


def test_graph_follower_episodes_report_spl(tmp_path):
    res = nav("three_rooms", "Blue Room", episodes=2, seed=3, video=str(tmp_path / "nav.mp4"))
    assert res["place"] == "blue room" and res["episodes"] == 2
    for ep in res["per_episode"]:
        assert 0.0 <= ep["spl"] <= 1.0 and ep["shortest_path_length_m"] > 0
        assert ep["spl"] == 0.0 or ep["success"]
    assert res["video"] and (tmp_path / "nav.mp4").stat().st_size > 1000


def test_vla_only_mode_runs_the_policy_and_graph_vla_needs_a_subgoal_policy(tiny_checkpoint):
    res = nav("three_rooms", "blue room", mode="vla", policy=tiny_checkpoint, max_steps=8)
    assert res["per_episode"][0]["steps"] == 8 and res["mode"] == "vla"
    with pytest.raises(UsageError, match="has no embodiment 'wheeled_nav'"):
        nav("three_rooms", "blue room", mode="graph+vla", policy=tiny_checkpoint)


def test_graph_vla_asks_the_policy_for_waypoints_toward_each_subgoal(subgoal_checkpoint, monkeypatch):
    from planners import navigate
    seen = []
    real = navigate.PolicyWaypointDecider.waypoints

    def spy(self, obs, subgoal):
        out = real(self, obs, subgoal)
        seen.append((np.asarray(subgoal).copy(), out))
        return out

    monkeypatch.setattr(navigate.PolicyWaypointDecider, "waypoints", spy)
    res = nav("three_rooms", "blue room", mode="graph+vla", policy=subgoal_checkpoint, max_steps=20, seed=3)
    ep = res["per_episode"][0]
    assert res["mode"] == "graph+vla" and (ep["steps"] == 20 or ep["end"] in ("reached", "blocked"))
    assert ep["decisions"] == len(seen) >= 4 and ep["policy_ms_p50"] > 0  # a new chunk every 5 steps
    for subgoal, waypoints in seen:
        assert subgoal.shape == (2,) and waypoints.shape == (8, 4) and np.isfinite(waypoints).all()
    assert res["recovery_steps"] == 20 and ep["recoveries"] * 20 >= ep["recovery_steps_driven"] >= 0
    with pytest.raises(UsageError, match="--recovery_steps must be >= 0"):
        nav("three_rooms", "blue room", mode="graph+vla", policy=subgoal_checkpoint, recovery_steps=-1)
