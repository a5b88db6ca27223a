"""Random floor plans: valid by the schema, both kinds, every room joined, and drivable by the expert."""
import networkx as nx
import pytest

from components.envs.floorplan import load_floorplan, parse_floorplan
from components.envs.floorplan_gen import random_floorplan
from stack.nav import floorplans


def test_random_floorplans_are_valid_connected_and_seeded():
    kinds = set()
    for seed in range(60):
        data = random_floorplan(seed)
        plan = parse_floorplan(data, source=data["name"])
        kinds.add(data["name"].split("_")[1])
        g = nx.Graph([tuple(d["between"]) for d in data["doors"]])
        assert set(g.nodes) == {r.name for r in plan.rooms} and nx.is_connected(g), data["name"]
        assert all(1.0 <= d.width <= 1.6 for d in plan.doors)
    assert kinds == {"spine", "grid"}
    assert random_floorplan(7) == random_floorplan(7) and random_floorplan(7) != random_floorplan(8)


def test_floorplans_command_writes_plans_the_expert_drives(tmp_path):
    from components.envs.experts import measure_expert
    paths = floorplans(str(tmp_path), count=2, seed=1000)
    assert [p.rsplit("/", 1)[1] for p in paths] == ["gen_00.yaml", "gen_01.yaml"]
    assert load_floorplan(paths[1]).name == random_floorplan(1001)["name"]
    res = measure_expert("vla_stack/WheeledNav-v0", range(2), floorplan=paths[0])
    assert res["successes"] == 2


def test_floorplans_command_refuses_bad_arguments(tmp_path):
    from components.errors import UsageError
    with pytest.raises(UsageError, match="--count"):
        floorplans(str(tmp_path), count=0)
    with pytest.raises(UsageError, match="--kind"):
        floorplans(str(tmp_path), kind="ring")
