"""`vla-stack ablate` and `run --record` end to end in the real Fetch push env with the tiny (randomly
initialised) checkpoint and a tiny learned world model: every arm on the same seeds, the table, the
plot, paired p-values; rollouts appended whole to an episode store."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from components.episode_store import EpisodeStore
from stack.results import mcnemar_exact
from stack.runner import run

REPO = Path(__file__).resolve().parents[2]
PUSH = "vla_stack/FetchPush-v0"
REACH = "vla_stack/FetchReach-v0"


@pytest.fixture(scope="module")
def learned_dir(tmp_path_factory):
    """A tiny learned world model for fetch (random weights) saved as a pipeline directory."""
    from components.embodiment import Embodiments
    from world_model.pipeline import WorldModelMeta, build_pipeline

    spec = Embodiments.from_config_dir(["fetch"])["fetch"]
    meta = WorldModelMeta(cameras=spec.camera_names, frame_height=16, frame_width=16, context_frames=2,
                          num_frames=2, execute_steps=5, embodiments={"fetch": WorldModelMeta.embodiment_entry(spec, 0)})
    torch.manual_seed(0)
    pipe = build_pipeline(meta, "dit", vae={"block_out_channels": (8, 16, 16)},
                          transformer={"dim": 32, "depth": 1, "heads": 2})
    out = tmp_path_factory.mktemp("wm") / "wm"
    pipe.save_pretrained(out)
    return str(out)


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "stack.cli", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=600)


def test_ablate_runs_every_arm_on_the_same_seeds(tiny_checkpoint, learned_dir, tmp_path):
    arms = tmp_path / "arms.yaml"
    arms.write_text(
        "- {name: k1, candidates: 1}\n"
        "- {name: random3, candidates: 3, scorer: random}\n"
        "- {name: oracle3, candidates: 3, world_model: oracle, scorer: oracle_outcome, rank_agreement: true}\n"
        f"- {{name: learned3, candidates: 3, world_model: '{learned_dir}', scorer: random}}\n")
    out = tmp_path / "abl"
    proc = _cli("ablate", "--arms", str(arms), "--env", PUSH, "--policy", tiny_checkpoint, "--out", str(out),
                "--episodes", "2", "--seed", "3", "--execute_horizon", "5", "--max_steps", "10",
                "--num_flow_steps", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "ablation.json").read_text())
    assert result["seeds"] == [3, 4] and result["execute_horizon"] == 5 and not result["temporal_ensemble"]
    rows = {r["name"]: r for r in result["arms"]}
    assert list(rows) == ["k1", "random3", "oracle3", "learned3"]
    for name, row in rows.items():
        assert row["episodes"] == 2 and row["successes"] == sum(row["per_seed_success"])
        assert row["mcnemar_p"] == mcnemar_exact(rows["k1"]["per_seed_success"], row["per_seed_success"])
        assert row["decision_ms"]["p50"] > 0 and row["replans"] == 2  # decisions at steps 0 and 5 of 10
    assert rows["k1"]["imagine_ms"] is None and rows["random3"]["imagine_ms"] is None
    assert rows["oracle3"]["imagine_ms"]["p50"] > 0 and rows["learned3"]["imagine_ms"]["p50"] > 0
    # rank agreement only where asked: the oracle's own outcome ranks exactly as the truth does
    assert rows["k1"]["rank_agreement"] is None and rows["random3"]["rank_agreement"] is None
    assert rows["oracle3"]["rank_agreement"]["decisions"] == 4 and rows["oracle3"]["rank_agreement"]["regret"] == 0
    assert rows["oracle3"]["rank_agreement"]["top1_agreement"] == 1.0
    table = (out / "ablation.md").read_text()
    assert table.count("\n| ") == 5 and "| oracle3 | 3 | oracle | oracle_outcome |" in table
    assert "| Spearman | top-1 |" in table and table.split("\n| k1 |")[1].split("\n")[0].endswith("| - | - |")
    assert table.split("\n| oracle3 |")[1].split("\n")[0].endswith(" | 1.00 |")
    assert (out / "ablation.png").read_bytes()[:4] == b"\x89PNG"


def test_run_with_the_oracle_records_choices_and_reports_imagine_latency(tiny_checkpoint, tmp_path):
    result = run(PUSH, tiny_checkpoint, episodes=1, seed=2, candidates=3, world_model="oracle",
                 scorer="oracle_outcome", execute_horizon=5, max_steps=10, num_flow_steps=2,
                 video=str(tmp_path / "v.mp4"), video_episodes=1)
    decisions = result["per_episode"][0]["decisions"]
    assert len(decisions) == 2 and result["scorer"] == "oracle_outcome" and result["world_model"] == "oracle"
    for d in decisions:
        assert len(d["scores"]) == 3 and d["choice"] == int(np.argmax(d["outcome"]))
    assert result["imagine_ms"]["p50"] > 0 and result["surprise_replans"] == 0
    assert Path(result["video"]).stat().st_size > 0


def test_run_record_appends_whole_rollouts_and_refuses_to_mix(tiny_checkpoint, tmp_path):
    store = tmp_path / "roll.zarr"
    first = run(REACH, tiny_checkpoint, episodes=2, seed=0, max_steps=6, num_flow_steps=2, record=str(store))
    st = EpisodeStore.open(store)
    assert st.n_episodes == 2 and list(st.episode_ends) == [6, 12]
    ep = st.get_episode(1)
    assert ep["action"].shape == (6, 4) and ep["state"].shape[0] == 6
    assert ep["episode_seed"].tolist() == [1] * 6
    assert ep["episode_success"].tolist() == [first["per_episode"][1]["success"]] * 6
    assert np.all(np.diff(ep["max_reward"]) >= 0) and ep["max_reward"][-1] == ep["reward"].max()
    run(REACH, tiny_checkpoint, episodes=1, seed=2, max_steps=6, num_flow_steps=2, record=str(store))
    assert EpisodeStore.open(store).n_episodes == 3
    proc = _cli("run", "--env", REACH, "--policy", tiny_checkpoint, "--episodes", "1", "--max_steps", "3",
                "--candidates", "2", "--scorer", "random", "--record", str(store))
    assert proc.returncode == 2 and "appending would mix datasets" in proc.stderr
    assert "Traceback" not in proc.stderr and EpisodeStore.open(store).n_episodes == 3
