"""`vla-stack serve` driven by the real openpi-client package (its own virtualenv: it pins numpy 1.x),
by concurrent clients (one batched model call, same chunks), and `run --remote` over the network."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from components.policy import Policy
from planners.remote import pack, unpack
from stack.serve import served

REPO = Path(__file__).resolve().parents[2]
DEFAULT_POLICY = REPO / "components" / "assets" / "default_policy"
# openpi-client 0.1.2 imports typing_extensions without declaring it
OPENPI_CLIENT = ["openpi-client==0.1.2", "typing_extensions==4.16.0"]
VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vla-stack" / "openpi-client-venv"
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def openpi_client_python() -> Path:
    """The virtualenv with openpi-client, created once under the cache dir (atomically) and reused."""
    python = VENV / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", "import openpi_client.websocket_client_policy"],
                                          capture_output=True).returncode == 0:
        return python
    building = VENV.with_name(f"{VENV.name}.tmp{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", building], check=True)
    subprocess.run([building / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    *OPENPI_CLIENT], check=True)
    shutil.rmtree(VENV, ignore_errors=True)
    building.rename(VENV)  # venv scripts keep the build path in their shebangs; `python -m` does not care
    return python


@pytest.fixture(scope="module")
def default_policy():
    return Policy.from_pretrained(DEFAULT_POLICY)


@pytest.fixture(scope="module")
def server():
    with served(DEFAULT_POLICY, "--batch_window_ms", "100", env=ENV) as uri:
        yield uri


def test_openpi_client_drives_every_embodiment(server, default_policy, tmp_path):
    python = openpi_client_python()
    host, port = server.removeprefix("ws://").split(":")
    out = tmp_path / "client.npz"
    subprocess.run([python, REPO / "tests" / "stack" / "openpi_client_script.py", host, port, out], check=True,
                   timeout=120, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    got = np.load(out)
    names = json.loads(str(got["embodiments"]))
    assert names == sorted(default_policy.embodiments) == ["aloha", "fetch", "wheeled", "wheeled_nav"]
    for seed, name in enumerate(names):
        spec = default_policy.processor.embodiments[name]
        obs = {"images": {c: got[f"{name}/images/{c}"] for c in spec.camera_names},
               "state": got[f"{name}/state"] if spec.state_dim else None}
        local = default_policy.sample_limited(obs, name, str(got[f"{name}/prompt"]), seed=seed).chunks[0]
        assert got[f"{name}/actions"].shape == (spec.chunk_horizon, spec.action_dim)
        np.testing.assert_allclose(got[f"{name}/actions"], local, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(got[f"{name}/again"], got[f"{name}/actions"])
        assert float(got[f"{name}/infer_ms"]) > 0
    errors = json.loads(str(got["errors"]))
    assert len(errors) == 2 * len(names)
    assert all(e.startswith("Error in inference server:\nvla-stack serve: bad request: ") for e in errors)
    assert any("image has shape" in e for e in errors) and any("'prompt' must be a non-empty string" in e
                                                                for e in errors)


def _fetch_request(policy, seed: int, prompt: str) -> dict:
    spec = policy.processor.embodiments["fetch"]
    rng = np.random.default_rng(seed)
    return {"images": {c.name: rng.integers(0, 256, (c.height, c.width, 3), dtype=np.uint8) for c in spec.cameras},
            "state": rng.uniform(-0.1, 0.1, spec.state_dim).astype(np.float32), "prompt": prompt,
            "embodiment": "fetch", "seed": seed}


def test_concurrent_clients_share_one_model_call_and_malformed_frames_are_answered(server, default_policy):
    from websockets.sync.client import connect

    requests = [_fetch_request(default_policy, i, "reach " + "far " * i) for i in range(4)]
    replies: list = [None] * 4
    barrier = threading.Barrier(4)

    def client(i: int) -> None:
        with connect(server, compression=None, max_size=None) as ws:
            unpack(ws.recv())
            ws.send(b"\x93\x01")  # truncated msgpack: answered, and the connection stays usable
            assert ws.recv().startswith("vla-stack serve: bad request: not a msgpack-numpy message")
            barrier.wait()
            ws.send(pack(requests[i]))
            replies[i] = unpack(ws.recv())

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert max(r["server_timing"]["batch_size"] for r in replies) > 1  # within the 100 ms window
    for request, reply in zip(requests, replies):
        local = default_policy.sample_limited(request, "fetch", request["prompt"], seed=request["seed"])
        np.testing.assert_allclose(reply["actions"], local.chunks[0], rtol=0, atol=1e-5)


def test_run_remote_gives_the_local_episodes(server):
    from stack.runner import run
    remote = run(env="vla_stack/FetchReach-v0", remote=server, episodes=1, max_steps=3, seed=5)
    local = run(env="vla_stack/FetchReach-v0", policy=str(DEFAULT_POLICY), episodes=1, max_steps=3, seed=5)
    assert remote["policy"] == server and remote["decisions"] == local["decisions"] >= 1
    for a, b in zip(remote["per_episode"], local["per_episode"]):
        assert (a["steps"], a["success"], a["clipped_actions"]) == (b["steps"], b["success"], b["clipped_actions"])
        assert a["return"] == pytest.approx(b["return"], abs=1e-4)
