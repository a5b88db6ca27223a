"""README's main command: the shipped generalist closed-loop in the three simulators."""
import json
from pathlib import Path

import pytest

from stack.commands import DEFAULT_POLICY, demo


def test_demo_runs_every_task_and_writes_videos_and_results(subgoal_checkpoint, tmp_path):
    results = demo(episodes=1, out_dir=str(tmp_path), policy=subgoal_checkpoint, max_steps=60)
    assert set(results) == {"vla_stack/FetchReach-v0", "vla_stack/WheeledHallway-v0", "vla_stack/AlohaTransferCube-v0",
                            "nav house"}
    nav = json.loads((tmp_path / "nav_house.json").read_text())
    assert nav["episodes"] == 1 and nav["place"] == "kitchen" and nav["mode"] == "graph+vla"
    assert 0 < nav["per_episode"][0]["steps"] <= 60 and nav["per_episode"][0]["decisions"] >= 1
    assert (tmp_path / "nav_house.mp4").stat().st_size > 0
    for env, result in results.items():
        if env.startswith("nav "):
            continue
        name = env.split("/")[1].removesuffix("-v0")
        saved = json.loads((tmp_path / f"{name}.json").read_text())
        assert saved["episodes"] == 1 and saved["seeds"] == [1000]
        assert (tmp_path / f"{name}.mp4").stat().st_size > 0


@pytest.mark.skipif(not (DEFAULT_POLICY / "config.json").exists(), reason="no embedded default policy shipped")
def test_embedded_default_policy_is_small_and_serves_every_robot_and_the_subgoal_base():
    from components.policy import Policy
    size = sum(p.stat().st_size for p in Path(DEFAULT_POLICY).rglob("*") if p.is_file())
    assert size <= 40 * 2**20
    assert {"aloha", "fetch", "wheeled", "wheeled_nav"} <= set(Policy.from_pretrained(DEFAULT_POLICY).embodiments)
