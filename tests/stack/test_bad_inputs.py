"""Bad input on the command line, as a user meets it: every case exits 2 with one error line that
names the file or argument, and no traceback. Plus `kill -9` in the middle of collect, fit and a
checkpoint write: what is on disk afterwards still loads, and the command resumes.

Each case is a real `python -m stack.cli` subprocess; the selected cases run two at a time.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from components.embodiment import Embodiments
from components.episode_store import EpisodeStore
from components.normalization import stats_digest
from components.synthetic import make_synthetic_store
from tests.stack.video_files import (write_audio_only, write_frameless_video, write_garbage, write_truncated_mp4,
                                     write_video)

REPO = Path(__file__).resolve().parents[2]
TRAIN_CONFIG = REPO / "configs" / "train" / "vla_tiny.yaml"
FETCH = "vla_stack/FetchReach-v0"
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
ENV.pop("VLA_STACK_DEBUG", None)

FIT = ["fit", "--config", str(TRAIN_CONFIG), "--trainer.max_steps=1", "--trainer.limit_val_batches=0",
       "--data.num_workers=0", "--data.batch_size=2", "--trainer.enable_progress_bar=false"]
LEROBOT = REPO / "tests" / "fixtures" / "lerobot_aloha"
LEROBOT_MAP = REPO / "tests" / "fixtures" / "lerobot_aloha_map.yaml"
IMPORT = ["import-lerobot", "--dataset", str(LEROBOT), "--embodiment", "aloha", "--out", "{tmp}/l.zarr", "--map"]
DATASETS = "--data.datasets=[{{\"path\": \"{store}\"}}]"
PREDICT = ["predict-trajectory", "--policy", "{ckpt}", "--out", "{tmp}/p.json", "--video"]

# (id, arguments of vla-stack with {placeholders} from the `inputs` fixture, what stderr must say)
CASES = [
    # run
    ("run-unknown-env", ["run", "--env", "vla_stack/Nope-v0", "--policy", "{ckpt}"],
     r"--env: unknown environment 'vla_stack/Nope-v0'; known: \[.*FetchReach-v0"),
    ("run-missing-policy-dir", ["run", "--env", FETCH, "--policy", "{tmp}/nowhere"],
     r"--policy: checkpoint directory '.*nowhere' does not exist"),
    ("run-empty-policy-dir", ["run", "--env", FETCH, "--policy", "{empty}"],
     r"'.*empty' is not a VLA checkpoint directory: no config.json, model.safetensors.*\(it is empty\)"),
    ("run-truncated-weights", ["run", "--env", FETCH, "--policy", "{truncated}"],
     r"truncated/model.safetensors: cannot read the model weights \(SafetensorError"),
    ("run-edited-norm-stats", ["run", "--env", FETCH, "--policy", "{edited_stats}"],
     r"edited_stats/norm_stats.json: sha256 is \w+, expected \w+ .*was modified"),
    ("run-stats-missing-an-embodiment", ["run", "--env", FETCH, "--policy", "{stats_without_wheeled}"],
     r"stats_without_wheeled/norm_stats.json: no normalization statistics for embodiment\(s\) \['wheeled'\]"),
    ("run-invalid-config-json", ["run", "--env", FETCH, "--policy", "{bad_json}"],
     r"bad_json/config.json: cannot read the model configuration \(JSONDecodeError"),
    ("run-zero-episodes", ["run", "--env", FETCH, "--policy", "{ckpt}", "--episodes", "0"],
     r"--episodes must be >= 1, got 0"),
    ("nav-unknown-place", ["nav", "--floorplan", "three_rooms", "--goal", "the kitchen"],
     r"unknown place 'the kitchen'; known places: \['blue room', 'green room', 'red room'\]"),
    ("nav-invalid-floor-plan", ["nav", "--floorplan", "{bad_floorplan}", "--goal", "a"], r"bad_plan.yaml: invalid YAML"),
    ("nav-unreachable-place", ["nav", "--floorplan", "{shut_floorplan}", "--goal", "the vault"],
     r"no route to 'vault': the map of shut has no node in it \(no open door leads there"),
    ("nav-unreadable-map", ["nav", "--floorplan", "three_rooms", "--goal", "blue room", "--map", "{bad_map}"],
     r"bad_map/graph.json: not valid JSON"),
    ("nav-unknown-mode", ["nav", "--floorplan", "three_rooms", "--goal", "blue room", "--mode", "fly"],
     r"--mode: expected one of \['graph\+follower', 'graph\+vla', 'vla'\], got 'fly'"),
    ("nav-bad-scenario", ["nav", "--floorplan", "three_rooms", "--goal", "blue room", "--scenario", "red room-attic@5"],
     r"attic"),
    ("route-missing-map", ["route", "--map", "{tmp}/no_map", "--goal", "kitchen"],
     r"map directory '.*no_map' does not exist"),
    ("map-unknown-floor-plan", ["map", "--floorplan", "nope", "--out", "{tmp}/m"],
     r"unknown floor plan 'nope'"),
    ("run-num-envs-with-video", ["run", "--env", FETCH, "--policy", "{ckpt}", "--episodes", "2", "--num_envs", "2",
                                 "--video", "{tmp}/v.mp4"],
     r"--num_envs > 1 evaluates the plain VLA with a local --policy"),
    ("run-two-candidates", ["run", "--env", FETCH, "--policy", "{ckpt}", "--candidates", "2"],
     r"--candidates 2 with --world_model none: nothing ranks the candidates; give --scorer random"),
    ("run-unknown-scorer", ["run", "--env", FETCH, "--policy", "{ckpt}", "--candidates", "2", "--world_model",
                            "oracle", "--scorer", "best"],
     r"--scorer: unknown scorer 'best'; known: \[.*oracle_outcome.*random"),
    ("run-oracle-on-wheeled", ["run", "--env", "vla_stack/WheeledHallway-v0", "--policy", "{ckpt}",
                               "--world_model", "oracle", "--episodes", "1"],
     r"world model 'oracle' for embodiment 'wheeled': env WheeledEnv has no simulator-state copy"),
    ("run-missing-world-model-dir", ["run", "--env", FETCH, "--policy", "{ckpt}", "--world_model", "{tmp}/nowm"],
     r"--world_model: '.*nowm' is neither none, oracle nor an existing world-model checkpoint directory"),
    ("run-verify-without-threshold", ["run", "--env", FETCH, "--policy", "{ckpt}", "--world_model", "oracle",
                                      "--verify", "true"],
     r"--verify needs --surprise_threshold"),
    ("ablate-missing-arms", ["ablate", "--arms", "{tmp}/arms.yaml", "--env", FETCH, "--policy", "{ckpt}",
                             "--out", "{tmp}/abl"],
     r"--arms: '.*arms.yaml' does not exist"),
    ("run-execute-horizon-too-long", ["run", "--env", FETCH, "--policy", "{ckpt}", "--execute_horizon", "999"],
     r"--execute_horizon: 999 is outside 1\.\.\d+ for fetch"),
    ("run-temporal-ensemble-of-waypoints", ["run", "--env", "vla_stack/WheeledHallway-v0", "--policy", "{ckpt}",
                                            "--temporal_ensemble", "true"],
     r"--temporal_ensemble: not available for wheeled"),
    ("run-onnx-without-export", ["run", "--env", FETCH, "--policy", "{ckpt}", "--decoder", "onnx"],
     r"no exported graph \(decoder.onnx\) for decoder='onnx'; run `vla-stack export"),
    ("run-onnxruntime-without-export", ["run", "--env", FETCH, "--policy", "{ckpt}", "--runtime", "onnxruntime"],
     r"no exported graph \(decoder.onnx\) for runtime='onnxruntime'; run `vla-stack export"),
    ("run-unknown-runtime", ["run", "--env", FETCH, "--policy", "{ckpt}", "--runtime", "tensorrt"],
     r"runtime must be one of \['torch', 'onnxruntime'\], got 'tensorrt'"),
    ("run-unknown-floor-plan", ["run", "--env", "vla_stack/Wheeled-v0", "--policy", "{ckpt}", "--episodes", "1",
                                "--env_kwargs", "{{floorplan: nope}}"],
     r"unknown floor plan 'nope': no .*nope.yaml; available: \["),
    ("run-invalid-floor-plan-yaml", ["run", "--env", "vla_stack/Wheeled-v0", "--policy", "{ckpt}",
                                     "--episodes", "1", "--env_kwargs", "{{floorplan: {bad_floorplan}}}"],
     r"bad_plan.yaml: invalid YAML"),
    ("run-episodes-not-a-number", ["run", "--env", FETCH, "--policy", "{ckpt}", "--episodes", "many"],
     r'error: Parser key "episodes"'),
    ("run-remote-unreachable", ["run", "--env", FETCH, "--remote", "ws://127.0.0.1:1"],
     r"--remote ws://127.0.0.1:1: cannot connect \(ConnectionRefusedError.*expected a policy server there"),
    ("run-remote-not-a-ws-uri", ["run", "--env", FETCH, "--remote", "127.0.0.1:8000"],
     r"--remote: expected ws://HOST:PORT \(what `vla-stack serve` prints\), got '127.0.0.1:8000'"),
    ("run-policy-and-remote", ["run", "--env", FETCH, "--policy", "{ckpt}", "--remote", "ws://127.0.0.1:1"],
     r"give --policy DIR \(a checkpoint directory\) or --remote ws://HOST:PORT \(a policy server\), exactly one"),
    # serve
    ("serve-port-out-of-range", ["serve", "--policy", "{ckpt}", "--port", "70000"],
     r"--port must be in 0\.\.65535 \(0: any free port\), got 70000"),
    ("serve-missing-policy-dir", ["serve", "--policy", "{tmp}/nowhere"],
     r"--policy: checkpoint directory '.*nowhere' does not exist"),
    ("serve-empty-policy-dir", ["serve", "--policy", "{empty}", "--port", "0"],
     r"'.*empty' is not a VLA checkpoint directory"),
    ("serve-zero-max-batch", ["serve", "--policy", "{ckpt}", "--max_batch", "0"],
     r"--max_batch must be >= 1, got 0"),
    ("bench-decide-zero-candidates", ["bench", "decide", "--env", "vla_stack/FetchPush-v0", "--policy", "{ckpt}",
                                     "--candidates", "[0, 2]"],
     r"--candidates must be >= 1, got 0"),
    ("bench-decide-unknown-scorer", ["bench", "decide", "--env", "vla_stack/FetchPush-v0", "--policy", "{ckpt}",
                                     "--scorer", "best"],
     r"--scorer: unknown scorer 'best'; known: \[.*oracle_outcome.*random"),
    ("bench-decide-oracle-on-wheeled", ["bench", "decide", "--env", "vla_stack/WheeledHallway-v0", "--policy",
                                        "{ckpt}"],
     r"world model 'oracle' for embodiment 'wheeled': env WheeledEnv has no simulator-state copy"),
    ("run-rank-agreement-on-wheeled", ["run", "--env", "vla_stack/WheeledHallway-v0", "--policy", "{ckpt}",
                                       "--candidates", "2", "--scorer", "random", "--rank_agreement", "true",
                                       "--episodes", "1"],
     r"--rank_agreement needs the simulator oracle for the true outcomes \(Fetch, ALOHA\): .*WheeledEnv has no "
     r"simulator-state copy"),
    ("run-rank-agreement-one-candidate", ["run", "--env", FETCH, "--policy", "{ckpt}", "--rank_agreement", "true"],
     r"--rank_agreement compares the ranking of the K candidates with their true outcomes: it needs "
     r"--candidates >= 2, got 1"),
    ("bench-serve-zero-clients", ["bench", "serve", "--policy", "{ckpt}", "--clients", "0"],
     r"--clients must be >= 1, got 0"),
    # sample
    ("sample-missing-tokenizer-file", ["sample", "--policy", "{no_tokenizer}"],
     r"no_tokenizer/tokenizer: tokenizer files missing: \['tokenizer.json or vocab.json'\]"),
    ("sample-invalid-embodiments-yaml", ["sample", "--policy", "{bad_embodiments}"],
     r"bad_embodiments/embodiments.yaml: expected YAML with a list 'embodiments'"),
    ("sample-config-json-without-its-model", ["sample", "--policy", "{config_no_vla}"],
     r"config_no_vla/config.json: the model configuration has no field 'vla'"),
    ("sample-missing-weights", ["sample", "--policy", "{no_weights}"],
     r"'.*no_weights' is not a VLA checkpoint directory: no model.safetensors \(it has config.json"),
    ("sample-unknown-embodiment", ["sample", "--policy", "{ckpt}", "--embodiment", "[spot]"],
     r"unknown embodiment 'spot'; this model knows \["),
    ("sample-zero-samples", ["sample", "--policy", "{ckpt}", "--num_samples", "0"],
     r"--num_samples must be >= 1, got 0"),
    # export
    ("export-truncated-weights", ["export", "--policy", "{truncated}", "--out", "{tmp}/exported"],
     r"truncated/model.safetensors: cannot read the model weights"),
    ("export-missing-policy-dir", ["export", "--policy", "{tmp}/nowhere", "--out", "{tmp}/exported"],
     r"checkpoint directory '.*nowhere' does not exist"),
    ("export-unknown-embodiment", ["export", "--policy", "{ckpt}", "--out", "{tmp}/exported", "--embodiment", "[spot]"],
     r"--embodiment: \['spot'\] not in the checkpoint"),
    ("export-zero-steps", ["export", "--policy", "{ckpt}", "--out", "{tmp}/exported", "--num_steps", "0"],
     r"--num_steps must be >= 1"),
    ("export-negative-tolerance", ["export", "--policy", "{ckpt}", "--out", "{tmp}/exported", "--atol", "-1"],
     r"--atol must be > 0"),
    ("export-out-is-a-file", ["export", "--policy", "{ckpt}", "--out", "{a_file}"],
     r"--out: '.*a_file.txt' is a file; expected a directory"),
    # stats
    ("stats-missing-store", ["stats", "--data", "[{tmp}/nowhere.zarr]", "--out", "{tmp}/s.json"],
     r"--data: episode store '.*nowhere.zarr' does not exist"),
    ("stats-not-a-store", ["stats", "--data", "[{empty}]", "--out", "{tmp}/s.json"],
     r"--data\[0\]: .*empty is not an episode store"),
    ("stats-damaged-chunk", ["stats", "--data", "[{damaged_actions}]", "--out", "{tmp}/s.json"],
     r"damaged_actions.zarr: data/action frames 0\.\.149 \(episode\(s\) \[0, 1, 2\]\) cannot be read from "
     r".*damaged_actions.zarr/data/action/c/0/0 \(RuntimeError: Zstd"),
    # collect
    ("collect-unknown-env", ["collect", "--env", "vla_stack/Nope-v0", "--episodes", "1", "--out", "{tmp}/c.zarr"],
     r"--env: unknown environment 'vla_stack/Nope-v0'"),
    ("collect-zero-episodes", ["collect", "--env", FETCH, "--episodes", "0", "--out", "{tmp}/c.zarr"],
     r"--episodes and --workers must be >= 1, got 0 and 1"),
    ("collect-noise-out-of-range", ["collect", "--env", FETCH, "--episodes", "1", "--out", "{tmp}/c.zarr",
                                    "--noise", "2"],
     r"--noise must be in \[0, 1\], got 2"),
    ("collect-out-of-another-embodiment", ["collect", "--env", "vla_stack/WheeledHallway-v0", "--episodes", "1",
                                           "--out", "{fetch_store}"],
     r"--out: .*fetch_copy.zarr holds embodiment 'fetch'.*needs 'wheeled'"),
    ("collect-too-many-discarded", ["collect", "--env", FETCH, "--episodes", "1", "--out", "{tmp}/c.zarr",
                                    "--env_kwargs", "{{max_episode_steps: 1}}", "--max_discarded", "0"],
     r"discarded 1 seed\(s\) \[0\] \(expert failed.*raise --max_discarded to go on\); the 0 whole episode\(s\) in "
     r".*c.zarr are kept"),
    # import-lerobot (tests/fixtures/lerobot_aloha, written by LeRobot's own writer)
    ("import-lerobot-unknown-feature", [*IMPORT, "{lerobot_map_unknown_feature}"],
     r"--map: 'action' names feature 'actions', which .*lerobot_aloha does not have; its features are \[.*'action'"),
    ("import-lerobot-width-mismatch", [*IMPORT, "{lerobot_map_width}"],
     r"'action'.index has 4 entries but embodiment 'aloha' declares 14 action slots"),
    ("import-lerobot-out-of-range", [*IMPORT, "{lerobot_map_reversed}"],
     r"episode 1 feature 'action': 'action' value .* in slot 'left_gripper' is outside the range \[-0.2, 1.2\]"),
    ("import-lerobot-wrong-camera", [*IMPORT, "{lerobot_map_camera}"],
     r"embodiment 'aloha' has cameras \['top'\]; the map misses \['top'\] and names unknown camera\(s\) \['front'\]"),
    ("import-lerobot-old-version", ["import-lerobot", "--dataset", "{lerobot_v21}", "--embodiment", "aloha",
                                    "--out", "{tmp}/l.zarr", "--map", str(LEROBOT_MAP)],
     r"info.json: codebase_version v2.1; import-lerobot reads LeRobot v3.x datasets"),
    ("import-lerobot-not-a-dataset", ["import-lerobot", "--dataset", "{empty}", "--embodiment", "aloha",
                                      "--out", "{tmp}/l.zarr", "--map", str(LEROBOT_MAP)],
     r"--dataset: .*empty is not a LeRobot dataset \(no meta/info.json\)"),
    # predict-trajectory, eval-trajectory
    ("predict-trajectory-missing-video", [*PREDICT, "{tmp}/nowhere.mp4"], r"video '.*nowhere.mp4' does not exist"),
    ("predict-trajectory-garbage-bytes", [*PREDICT, "{garbage_video}"],
     r"garbage.mp4: cannot be read as a video \(InvalidDataError"),
    ("predict-trajectory-truncated", [*PREDICT, "{truncated_video}"],
     r"cut.mp4: corrupt or truncated video: its index declares 30 frames but only \d+ could be decoded"),
    ("predict-trajectory-zero-frames", [*PREDICT, "{frameless_video}"],
     r"empty.avi: the video stream has no frames \(container 'avi'\)"),
    ("predict-trajectory-audio-only", [*PREDICT, "{audio_only}"], r"sound.m4a: has no video stream \(streams: audio\)"),
    ("predict-trajectory-policy-without-video", ["predict-trajectory", "--policy", "{no_video_policy}", "--out",
                                                 "{tmp}/p.json", "--video", "{poses_ok}/clip.mkv"],
     r"--policy: this checkpoint knows the embodiments \['aloha', 'fetch', 'wheeled'\], not 'video'"),
    ("predict-trajectory-zero-batch", [*PREDICT, "{poses_ok}/clip.mkv", "--batch_size", "0"],
     r"--batch_size must be >= 1, got 0"),
    ("eval-trajectory-no-pairs", ["eval-trajectory", "--videos", "{empty}", "--policy", "{ckpt}"],
     r"--videos: '.*empty' has no video with a poses sidecar \(0 video\(s\)"),
    ("eval-trajectory-malformed-poses", ["eval-trajectory", "--videos", "{poses_bad}", "--policy", "{ckpt}"],
     r"poses_bad/clip.poses.csv:3: 2 values; expected 4 \(t_s,x_m,y_m,yaw_rad\)"),
    ("eval-trajectory-poses-too-short", ["eval-trajectory", "--videos", "{poses_short}", "--policy", "{ckpt}"],
     r"poses_short/clip.poses.csv: poses cover 0..2 s but the video .*clip.mkv runs 0..5.9 s"),
    # fit
    ("fit-world-model-missing-store", ["fit", "--config", str(REPO / "configs/train/world_model_tiny.yaml"),
                                       "--data.init_args.datasets=[{tmp}/nowhere.zarr]", "--trainer.max_steps=1"],
     r"data.datasets: episode store '.*nowhere.zarr' does not exist"),
    ("fit-world-model-not-an-autoencoder", ["fit", "--config", str(REPO / "configs/train/world_model_tiny.yaml"),
                                            "--data.init_args.datasets=[{fetch_store}]", "--trainer.max_steps=1",
                                            "--model.init_args.autoencoder={tmp}/nowhere"],
     r"model.autoencoder: '.*nowhere' is not an autoencoder directory \(no config.json"),
    ("fit-progress-store-without-reward", ["fit", "--config", str(REPO / "configs/train/progress_tiny.yaml"),
                                           "--data.init_args.datasets=[{fetch_store}]", "--trainer.max_steps=1"],
     r"data.datasets: .*fetch.* has no per-frame 'reward' .*record rollouts with `vla-stack run --record"),
    # the learned progress scorer
    ("run-progress-without-scorer-model", ["run", "--env", "vla_stack/FetchPush-v0", "--policy", "{ckpt}",
                                           "--candidates", "2", "--world_model", "oracle", "--scorer", "progress"],
     r"--scorer progress needs --scorer_model DIR"),
    ("run-progress-scorer-model-not-a-dir", ["run", "--env", "vla_stack/FetchPush-v0", "--policy", "{ckpt}",
                                             "--candidates", "2", "--world_model", "oracle", "--scorer", "progress",
                                             "--scorer_model", "{ckpt}"],
     r"--scorer_model: .* is not a progress-scorer directory \(no progress.json\)"),
    # eval-world-model
    ("eval-world-model-missing-dir", ["eval-world-model", "--world_model", "{tmp}/nowhere", "--data", "{fetch_store}"],
     r"world-model directory '.*nowhere' does not exist \(a world-model directory holds model_index.json"),
    ("eval-world-model-given-a-policy", ["eval-world-model", "--world_model", "{ckpt}", "--data", "{fetch_store}"],
     r"is not a world-model directory \(it is a VLA policy checkpoint\): no model_index.json, world_model.json"),
    ("eval-world-model-zero-episodes", ["eval-world-model", "--world_model", "{ckpt}", "--data", "{fetch_store}",
                                        "--episodes", "0"], r"--episodes must be >= 1, got 0"),
    # calibrate-surprise
    ("calibrate-surprise-missing-file", ["calibrate-surprise", "--results", "{tmp}/nowhere.json"],
     r"--results .*nowhere.json: no such file \(a `vla-stack run --json` result\)"),
    ("calibrate-surprise-not-a-run-result", ["calibrate-surprise", "--results", "{a_file}"],
     r"--results .*a_file.txt: not a `vla-stack run --json` result \(JSONDecodeError"),
    ("calibrate-surprise-bad-quantile", ["calibrate-surprise", "--results", "{a_file}", "--quantile", "1.5"],
     r"--quantile must be in \(0, 1\], got 1.5"),
    ("fit-missing-store", [*FIT, DATASETS.replace("{store}", "{tmp}/nowhere.zarr")],
     r"data.datasets: episode store '.*nowhere.zarr' does not exist"),
    ("fit-damaged-image-chunk", [*FIT, DATASETS.replace("{store}", "{damaged_images}")],
     r"damaged_images.zarr: data/images/front frames 0\.\.\d+ \(episode\(s\) \[0, 1\]\) cannot be read .*"
     r"collect these episodes again.*--data.skip_damaged_episodes=true"),
    ("fit-damaged-image-chunk-read-by-a-worker", [*FIT, DATASETS.replace("{store}", "{damaged_images}"),
                                                  "--data.num_workers=1"],
     r"damaged_images.zarr: data/images/front frames 0\.\.\d+ \(episode\(s\) \[0, 1\]\) cannot be read"),
    ("fit-unknown-model-config", [*FIT, DATASETS.replace("{store}", "{fetch_store}"), "--model.model=huge"],
     r"model config 'huge' not found: expected one of \['full', 'tiny'\]"),
    ("fit-unknown-option", [*FIT, "--data.batch_sizee=2"],
     r"batch_sizee"),
    ("unknown-command", ["fitt"], r"invalid choice: 'fitt'"),
]
PARSER_ERRORS = {"run-episodes-not-a-number", "fit-unknown-option", "unknown-command"}  # jsonargparse's own


def vla_stack(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stack.cli", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def damage_chunk(path: Path) -> None:
    """Cut a zarr chunk file short, as a disk error or an interrupted copy leaves it."""
    path.write_bytes(path.read_bytes()[:40])


@pytest.fixture(scope="module")
def inputs(tiny_checkpoint, synthetic_stores, tmp_path_factory) -> dict[str, str]:
    """The bad inputs of the cases: damaged copies of the session's tiny checkpoint and stores."""
    root = tmp_path_factory.mktemp("bad_inputs")

    def checkpoint(name: str) -> Path:
        return Path(shutil.copytree(tiny_checkpoint, root / name))

    weights = checkpoint("truncated") / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    stats = checkpoint("edited_stats") / "norm_stats.json"
    edited = json.loads(stats.read_text())
    edited["fetch"]["action"]["q99"][0] += 0.5
    stats.write_text(json.dumps(edited, indent=2, sort_keys=True) + "\n")
    partial = checkpoint("stats_without_wheeled")
    kept = {k: v for k, v in json.loads((partial / "norm_stats.json").read_text()).items() if k != "wheeled"}
    text = json.dumps(kept, indent=2, sort_keys=True) + "\n"
    (partial / "norm_stats.json").write_text(text)
    config = json.loads((partial / "config.json").read_text())
    (partial / "config.json").write_text(json.dumps({**config, "norm_stats_sha256": stats_digest(text)}))
    (checkpoint("bad_json") / "config.json").write_text('{"vla": {"decoder": ')
    config = checkpoint("config_no_vla") / "config.json"
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "vla"}))
    (checkpoint("no_tokenizer") / "tokenizer" / "tokenizer.json").unlink()
    (checkpoint("bad_embodiments") / "embodiments.yaml").write_text("embodiments: [name: fetch\n")
    (checkpoint("no_weights") / "model.safetensors").unlink()
    (root / "empty").mkdir()
    (root / "a_file.txt").write_text("not a directory\n")
    (root / "bad_plan.yaml").write_text("rooms: [{name: a, x: [0, 4]\n")
    (root / "shut.yaml").write_text("name: shut\nrooms:\n  - {name: hall, x: [0, 6], z: [0, 5]}\n"
                                    "  - {name: vault, x: [6, 10], z: [0, 5]}\n"
                                    "doors:\n  - {between: [hall, vault], width: 1.2, closed: true}\n")
    (root / "bad_map").mkdir()
    (root / "bad_map" / "graph.json").write_text("{not json")
    (root / "bad_map" / "grid.npz").write_bytes(b"")

    fetch = Embodiments.from_config_dir(["fetch"])["fetch"]
    make_synthetic_store(root / "damaged_actions.zarr", fetch, episodes=3, steps=50, seed=0)
    damage_chunk(root / "damaged_actions.zarr/data/action/c/0/0")
    make_synthetic_store(root / "damaged_images.zarr", fetch, episodes=2, steps=10, seed=0)
    damage_chunk(root / "damaged_images.zarr/data/images/front/c/0/0/0/0")
    shutil.copytree(synthetic_stores["fetch"], root / "fetch_copy.zarr")
    lerobot_maps = {"unknown_feature": {"action": "actions"},
                    "width": {"action": {"source": "action", "index": [0, 1, 2, 3]}},
                    "reversed": {"action": {"source": "action", "slots": [
                        s.name for s in Embodiments.from_config_dir(["aloha"])["aloha"].action_slots][::-1]}},
                    "camera": {"cameras": {"front": "observation.images.top"}}}
    for name, entries in lerobot_maps.items():
        (root / f"lerobot_map_{name}.yaml").write_text(yaml.safe_dump({**yaml.safe_load(LEROBOT_MAP.read_text()),
                                                                        **entries}))
    old = Path(shutil.copytree(LEROBOT, root / "lerobot_v21"))
    info = json.loads((old / "meta/info.json").read_text())
    (old / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    videos = {"garbage_video": write_garbage(root / "garbage.mp4"), "truncated_video": write_truncated_mp4(root / "cut.mp4"),
              "frameless_video": write_frameless_video(root / "empty.avi"), "audio_only": write_audio_only(root / "sound.m4a")}
    for name, poses in (("poses_ok", "t_s,x_m,y_m,yaw_rad\n0,0,0,0\n6,1,0,0\n"),
                        ("poses_bad", "t_s,x_m,y_m,yaw_rad\n0,0,0,0\n0.1,0.0\n"),
                        ("poses_short", "t_s,x_m,y_m,yaw_rad\n0,0,0,0\n2,1,0,0\n")):
        (root / name).mkdir()
        write_video(root / name / "clip.mkv", list(range(0, 6000, 100)))
        (root / name / "clip.poses.csv").write_text(poses)
        videos[name] = root / name
    no_video = checkpoint("no_video_policy") / "embodiments.yaml"
    Embodiments([s for s in Embodiments.load(no_video) if s.name != "video"]).save(no_video)
    names = ["truncated", "edited_stats", "bad_json", "config_no_vla", "no_tokenizer", "bad_embodiments",
             "no_weights", "empty", "stats_without_wheeled"]
    return {"tmp": str(root), "ckpt": tiny_checkpoint, **{n: str(root / n) for n in names},
            **{n: str(p) for n, p in videos.items()}, "no_video_policy": str(root / "no_video_policy"),
            "a_file": str(root / "a_file.txt"), "bad_floorplan": str(root / "bad_plan.yaml"),
            "shut_floorplan": str(root / "shut.yaml"), "bad_map": str(root / "bad_map"),
            "damaged_actions": str(root / "damaged_actions.zarr"),
            "damaged_images": str(root / "damaged_images.zarr"), "fetch_store": str(root / "fetch_copy.zarr"),
            "lerobot_v21": str(old), **{f"lerobot_map_{n}": str(root / f"lerobot_map_{n}.yaml") for n in lerobot_maps}}


@pytest.fixture(scope="module")
def outcomes(request, inputs) -> dict[str, subprocess.CompletedProcess]:
    """Every selected case run once, two subprocesses at a time."""
    selected = {item.callspec.params["case"][0] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec") and "case" in item.callspec.params}
    cases = [c for c in CASES if c[0] in selected]

    def run(case):
        name, args, _ = case
        return name, vla_stack([a.format(**inputs) for a in args], cwd=Path(inputs["tmp"]))

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, cases))


def test_corpus_covers_every_command():
    commands = {args[0] for _, args, _ in CASES}
    assert len(CASES) >= 25 and {"run", "collect", "fit", "stats", "export", "sample", "serve", "eval-world-model",
                                   "import-lerobot", "nav", "route", "map", "predict-trajectory",
                                   "eval-trajectory"} <= commands


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clean_error_line(case, outcomes):
    name, args, expected = case
    result = outcomes[name]
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert re.search(expected, result.stderr), result.stderr[-3000:]
    if name not in PARSER_ERRORS:
        last = result.stderr.rstrip().splitlines()[-1]
        command = " ".join(a for a in args[:2] if not a.startswith("-"))  # "bench serve": two words
        assert last.startswith(f"vla-stack {command}: error: ") and re.search(expected, last), result.stderr[-3000:]


def test_debug_shows_the_traceback_of_a_user_error(inputs):
    result = vla_stack(["sample", "--policy", inputs["bad_json"], "--debug"], cwd=Path(inputs["tmp"]))
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "JSONDecodeError" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("vla-stack sample: error: ")


def test_anything_else_is_reported_as_a_bug_with_its_traceback(monkeypatch, capsys):
    import stack.cli

    def broken(argv):
        raise ZeroDivisionError("division by zero")
    monkeypatch.setattr(stack.cli, "dispatch", broken)  # a bug anywhere below the boundary
    with pytest.raises(SystemExit) as exit_:
        stack.cli.main(["run", "--env", FETCH])
    err = capsys.readouterr().err
    assert exit_.value.code == 1
    assert "Traceback" in err and "ZeroDivisionError: division by zero" in err
    assert err.rstrip().splitlines()[-1].startswith("vla-stack run: internal error (ZeroDivisionError): this is a "
                                                    "bug in vla-stack")


def test_help_lists_every_command():
    result = vla_stack(["--help"], cwd=REPO)
    assert result.returncode == 0
    listed = re.search(r"\{([a-z_,-]+)\}", result.stdout).group(1).split(",")
    assert {"fit", "validate", "test", "predict", "run", "collect", "stats", "sample", "export", "demo",
            "synth", "bench", "ablate", "serve", "eval-world-model", "import-lerobot", "nav", "route",
            "map", "predict-trajectory", "eval-trajectory", "calibrate-surprise"} <= set(listed)


# ---- kill -9 --------------------------------------------------------------------------------------
def start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stack.cli", *args], cwd=cwd, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (it must hold before the process ends)."""
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, f"ended before it could be killed: {proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "timed out waiting for the moment to kill"
            time.sleep(0.05)
        proc.kill()
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()


def committed_episodes(path: Path) -> int:
    try:
        return EpisodeStore.open(path).n_episodes
    except Exception:  # not created yet, or being created
        return 0


def test_collect_killed_midway_resumes_to_whole_episodes(tmp_path):
    out = tmp_path / "reach.zarr"
    args = ["collect", "--env", FETCH, "--episodes", "10", "--out", str(out)]
    kill_when(start(args, tmp_path), lambda: committed_episodes(out) >= 1)
    killed = EpisodeStore.open(out)
    assert 1 <= killed.n_episodes < 10
    seeds = killed.lowdim("episode_seed")
    for i in range(killed.n_episodes):  # every visible episode is whole: one seed over its frames
        assert set(seeds[killed.episode_slice(i)]) == {i}

    resumed = vla_stack(args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    store = EpisodeStore.open(out)
    assert store.n_episodes == 10
    assert store.lowdim("episode_seed")[store.episode_ends - 1].tolist() == list(range(10))
    import zarr
    raw = zarr.open_group(str(out), mode="r")
    assert all(raw[f"data/{key}"].shape[0] == store.n_frames for key in store.keys)  # no leftover rows


def test_fit_killed_midway_resumes_from_last(synthetic_stores, tmp_path):
    config = yaml.safe_load(TRAIN_CONFIG.read_text())
    config["trainer"].update(max_steps=40, limit_val_batches=0, enable_progress_bar=False, logger=False)
    config["trainer"]["callbacks"][0]["init_args"]["every_n_train_steps"] = 1
    config["data"].update(datasets=[{"path": synthetic_stores["fetch"]}], batch_size=2, num_workers=0)
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(config))
    last = tmp_path / "runs/vla_tiny/checkpoints/last.ckpt"
    pretrained = tmp_path / "runs/vla_tiny/pretrained"
    kill_when(start(["fit", "--config", "fit.yaml"], tmp_path), last.exists)

    import torch

    from components.policy import Policy
    step = torch.load(last, weights_only=False)["global_step"]
    assert step >= 1
    if pretrained.exists():  # written at each checkpoint: whole, or the previous one
        assert Policy.from_pretrained(pretrained).embodiments == ["fetch"]
    resumed = vla_stack(["fit", "--config", "fit.yaml", f"--trainer.max_steps={step + 2}", "--ckpt_path=last"],
                        cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restoring states from the checkpoint path" in resumed.stderr + resumed.stdout
    assert torch.load(last, weights_only=False)["global_step"] == step + 2
    assert Policy.from_pretrained(pretrained).embodiments == ["fetch"]


def test_checkpoint_write_killed_midway_keeps_the_previous_checkpoint(tiny_checkpoint, tmp_path):
    previous = Path(shutil.copytree(tiny_checkpoint, tmp_path / "policy"))
    before = {p.relative_to(previous): p.read_bytes() for p in previous.rglob("*") if p.is_file()}

    def writing() -> bool:  # the copy is in the new directory: the ONNX export is under way
        return any((p / "model.safetensors").exists() for p in tmp_path.glob(".policy.partial-*"))

    kill_when(start(["export", "--policy", tiny_checkpoint, "--out", str(previous)], tmp_path), writing)
    assert {p.relative_to(previous): p.read_bytes() for p in previous.rglob("*") if p.is_file()} == before
    assert {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")} == {"policy"}

    from components.checkpoint_io import replace_directory
    from components.policy import Policy
    assert Policy.from_pretrained(previous).embodiments
    with replace_directory(tmp_path / "policy") as new:  # the next write clears what the killed one left
        shutil.copytree(previous, new, dirs_exist_ok=True)
    assert [p.name for p in tmp_path.iterdir()] == ["policy"]
