"""`vla-stack import-lerobot` on a dataset written by LeRobot's own writer (tests/fixtures/make_lerobot_aloha.py):
the imported frames and actions equal the source's (read here with pyarrow and PyAV), `fit` trains on the
store, and bad maps or datasets are clear errors that leave nothing behind."""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from components.embodiment import EmbodimentError
from components.episode_store import EpisodeStore
from components.errors import ConfigError, StoreError, UsageError
from stack.lerobot_import import INDEX_KEY, import_lerobot

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "lerobot_aloha"
MAP = REPO / "tests" / "fixtures" / "lerobot_aloha_map.yaml"
DATA = FIXTURE / "data" / "chunk-000" / "file-000.parquet"
VIDEO = FIXTURE / "videos" / "observation.images.top" / "chunk-000" / "file-000.mp4"
JOINTS = [s["name"] for s in yaml.safe_load((REPO / "configs/embodiments/aloha.yaml").read_text())["action_slots"]]


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("lerobot") / "aloha.zarr"
    import_lerobot(str(FIXTURE), "aloha", str(MAP), str(out))
    return str(out)


def write_map(path: Path, **entries) -> str:
    raw = {**yaml.safe_load(MAP.read_text()), **entries}
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_imported_frames_and_actions_equal_the_source(imported):
    store = EpisodeStore.open(imported)
    table = pq.read_table(DATA)
    with av.open(str(VIDEO)) as container:  # the whole file in decode order: the episodes one after another
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert store.embodiment == "aloha" and store.cameras == ["top"] and store.fps == 50
    assert store.n_episodes == 3 and store.n_frames == table.num_rows == len(decoded) == 42
    np.testing.assert_array_equal(store.episode_ends, np.cumsum(
        np.bincount(np.asarray(table["episode_index"].to_pylist()))))
    np.testing.assert_array_equal(store.lowdim("action"), np.asarray(table["action"].to_pylist(), np.float32))
    np.testing.assert_array_equal(store.lowdim("state"),
                                  np.asarray(table["observation.state"].to_pylist(), np.float32))
    np.testing.assert_array_equal(store.lowdim(INDEX_KEY), np.asarray(table["index"].to_pylist()))
    images = np.concatenate([store.get_episode(e)["images"]["top"] for e in range(3)])
    np.testing.assert_array_equal(images, decoded)
    tasks = pq.read_table(FIXTURE / "meta" / "episodes" / "chunk-000" / "file-000.parquet")["tasks"].to_pylist()
    assert store.instructions == [t[0] for t in tasks]


def test_slots_map_reorders_columns(tmp_path):
    """`slots` names the slot each source column fills; `index` the source column of each slot."""
    swap = [*range(7, 14), *range(7)]  # the arms exchanged
    slots = write_map(tmp_path / "slots.yaml", action={"source": "action", "slots": [JOINTS[i] for i in swap]})
    import_lerobot(str(FIXTURE), "aloha", slots, str(tmp_path / "slots.zarr"))
    source = np.asarray(pq.read_table(DATA)["action"].to_pylist(), np.float32)
    np.testing.assert_array_equal(EpisodeStore.open(tmp_path / "slots.zarr").lowdim("action"), source[:, swap])
    index = write_map(tmp_path / "index.yaml", state={"source": "observation.state", "index": swap})
    import_lerobot(str(FIXTURE), "aloha", index, str(tmp_path / "index.zarr"))
    state = np.asarray(pq.read_table(DATA)["observation.state"].to_pylist(), np.float32)
    np.testing.assert_array_equal(EpisodeStore.open(tmp_path / "index.zarr").lowdim("state"), state[:, swap])
    reversed_slots = write_map(tmp_path / "reversed.yaml", action={"source": "action", "slots": JOINTS[::-1]})
    with pytest.raises(EmbodimentError, match=r"value -0.2103 in slot 'left_gripper' is outside the range"):
        import_lerobot(str(FIXTURE), "aloha", reversed_slots, str(tmp_path / "reversed.zarr"))  # a joint as gripper


def test_fit_trains_on_the_imported_store(imported, tmp_path):
    config = [f"--config={REPO / 'configs/train' / name}" for name in ("base.yaml", "vla_tiny.yaml")]
    args = ["fit", *config, f"--data.datasets={json.dumps([{'path': imported}])}", "--data.batch_size=4",
            "--data.num_workers=0", "--trainer.limit_val_batches=0", "--trainer.log_every_n_steps=1",
            "--trainer.max_steps=3", "--trainer.enable_progress_bar=false"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    run = subprocess.run([sys.executable, "-m", "stack.cli", *args], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    with open(tmp_path / "runs/vla_tiny/logs/version_0/metrics.csv") as f:
        losses = [float(row["train/loss"]) for row in csv.DictReader(f) if row.get("train/loss")]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses), losses
    assert (tmp_path / "runs/vla_tiny/pretrained/model.safetensors").is_file()


def copy_with_scaled_actions(root: Path, factor: float) -> Path:
    """The fixture with every action multiplied by ``factor`` (the parquet rewritten, schema kept)."""
    dataset = Path(shutil.copytree(FIXTURE, root / "scaled"))
    path = dataset / DATA.relative_to(FIXTURE)
    table = pq.read_table(path)
    scaled = pa.array((np.asarray(table["action"].to_pylist(), np.float32) * factor).tolist(),
                      type=table.schema.field("action").type)
    pq.write_table(table.set_column(table.schema.get_field_index("action"), "action", scaled), path)
    return dataset


def test_bad_inputs_are_clear_errors_and_leave_nothing(tmp_path):
    out = tmp_path / "out.zarr"

    def refused(error, match, dataset=FIXTURE, mapping=str(MAP), embodiment="aloha"):
        with pytest.raises(error, match=match):
            import_lerobot(str(dataset), embodiment, mapping, str(out))
        assert not out.exists() and not list(tmp_path.glob(".out.zarr.partial-*"))

    refused(ConfigError, r"'action' names feature 'actions', which .* does not have; its features are \[.*'action'",
            mapping=write_map(tmp_path / "m1.yaml", action="actions"))
    refused(EmbodimentError, r"'action'.index has 13 entries but embodiment 'aloha' declares 14 action slots",
            mapping=write_map(tmp_path / "m2.yaml", action={"source": "action", "index": list(range(13))}))
    refused(ConfigError, r"'state'.slots must fill each of .* missing \['right_gripper'\]",
            mapping=write_map(tmp_path / "m3.yaml", state={"source": "observation.state",
                                                            "slots": JOINTS[:13] + [None]}))
    refused(EmbodimentError, r"embodiment 'aloha' has cameras \['top'\]; the map misses \['top'\] and names unknown "
                             r"camera\(s\) \['front'\]",
            mapping=write_map(tmp_path / "m4.yaml", cameras={"front": "observation.images.top"}))
    refused(ConfigError, r"camera 'top' names feature 'observation.state' of dtype float32; expected video",
            mapping=write_map(tmp_path / "m5.yaml", cameras={"top": "observation.state"}))
    refused(EmbodimentError, r"episode 0 feature 'action': 'action' value .* in slot '.*' is outside the range",
            dataset=copy_with_scaled_actions(tmp_path, 10.0))
    refused(EmbodimentError, r"recorded at 50 fps but embodiment 'fetch' .* runs at 25 Hz", embodiment="fetch",
            mapping=write_map(tmp_path / "m6.yaml", cameras={"front": "observation.images.top",
                                                             "side": "observation.images.top"},
                              action={"source": "action", "index": [0, 1, 2, 6]},
                              state={"source": "observation.state", "index": [0, 1, 2, 6]}))
    old = Path(shutil.copytree(FIXTURE, tmp_path / "v21"))
    info = json.loads((old / "meta/info.json").read_text())
    (old / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    refused(StoreError, r"codebase_version v2.1; import-lerobot reads LeRobot v3.x datasets", dataset=old)
    out.mkdir()
    with pytest.raises(UsageError, match=r"--out: .*out.zarr already exists"):
        import_lerobot(str(FIXTURE), "aloha", str(MAP), str(out))


def half_size_copy(root: Path) -> Path:
    """The fixture with its video re-encoded at 120x160 (same frames and timestamps; info.json updated)."""
    from fractions import Fraction
    dataset = Path(shutil.copytree(FIXTURE, root / "half"))
    path = dataset / VIDEO.relative_to(FIXTURE)
    with av.open(str(VIDEO)) as source:
        frames = [(f.pts, f.to_image().resize((160, 120))) for f in source.decode(video=0)]
        time_base = source.streams.video[0].time_base
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=50)
        stream.width, stream.height, stream.pix_fmt, stream.time_base = 160, 120, "yuv420p", Fraction(time_base)
        for pts, image in frames:
            frame = av.VideoFrame.from_image(image)
            frame.pts, frame.time_base = pts, Fraction(time_base)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    info = json.loads((dataset / "meta/info.json").read_text())
    info["features"]["observation.images.top"]["shape"] = [120, 160, 3]
    (dataset / "meta/info.json").write_text(json.dumps(info))
    return dataset


def test_resize_true_resizes_a_smaller_video_to_the_camera(tmp_path):
    """A 120x160 video for the 240x320 camera is an error naming the feature, unless the map says `resize: true`."""
    from components.processor import resize_image
    dataset = half_size_copy(tmp_path)
    with pytest.raises(EmbodimentError, match=r"feature 'observation.images.top' is 120x160 but camera 'top' .* "
                                              r"240x320; set `resize: true`"):
        import_lerobot(str(dataset), "aloha", str(MAP), str(tmp_path / "refused.zarr"))
    assert not (tmp_path / "refused.zarr").exists()
    mapping = write_map(tmp_path / "resize.yaml", cameras={"top": {"source": "observation.images.top", "resize": True}})
    import_lerobot(str(dataset), "aloha", mapping, str(tmp_path / "resized.zarr"))
    store = EpisodeStore.open(tmp_path / "resized.zarr")
    with av.open(str(dataset / VIDEO.relative_to(FIXTURE))) as container:
        small = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    images = np.concatenate([store.get_episode(e)["images"]["top"] for e in range(3)])
    assert images.shape == (42, 240, 320, 3)
    np.testing.assert_array_equal(images, np.stack([resize_image(f, 240, 320) for f in small]))


def test_dataset_directory_may_be_positional(tmp_path):
    """`vla-stack import-lerobot DIR ...` (the issue's form) is `--dataset DIR`; errors name the command, not DIR."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "p.zarr"
    run = subprocess.run([sys.executable, "-m", "stack.cli", "import-lerobot", str(FIXTURE), "--embodiment", "aloha",
                          "--map", str(MAP), "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert EpisodeStore.open(out).n_episodes == 3
    run = subprocess.run([sys.executable, "-m", "stack.cli", "import-lerobot", str(tmp_path / "nothing"),
                          "--embodiment", "aloha", "--map", str(MAP), "--out", str(tmp_path / "q.zarr")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.startswith("vla-stack import-lerobot: error: --dataset: ") and "nothing" in run.stderr
