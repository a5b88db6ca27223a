"""Runs inside the openpi-client virtualenv (numpy 1.x, no vla-stack): builds one request per served
embodiment from the server's metadata alone, drives ``WebsocketClientPolicy.infer`` and saves what
it sent and got to an .npz for the test to compare; also sends malformed requests on the same
connection and records the error each raised. Usage: python openpi_client_script.py HOST PORT OUT.npz"""
import json
import sys

import numpy as np
from openpi_client.websocket_client_policy import WebsocketClientPolicy

host, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
client = WebsocketClientPolicy(host, port)
metadata = client.get_server_metadata()
rng = np.random.default_rng(0)
saved, errors = {}, []
for seed, (name, served) in enumerate(sorted(metadata["embodiments"].items())):
    obs = {"images": {}, "embodiment": name, "seed": seed}
    for key, spec in served["observation_spec"].items():
        if spec["dtype"] == "str":
            obs[key] = f"do the {name} task"
        elif key.startswith("images/"):
            obs["images"][key.split("/", 1)[1]] = rng.integers(0, 256, spec["shape"], dtype=spec["dtype"])
        else:
            obs[key] = rng.uniform(-0.1, 0.1, spec["shape"]).astype(spec["dtype"])
    reply = client.infer(obs)
    saved[f"{name}/actions"] = reply["actions"]
    saved[f"{name}/infer_ms"] = np.float64(reply["server_timing"]["infer_ms"])
    for cam, image in obs["images"].items():
        saved[f"{name}/images/{cam}"] = image
    if "state" in obs:
        saved[f"{name}/state"] = obs["state"]
    saved[f"{name}/prompt"] = np.array(obs["prompt"])
    # malformed: a wrong image shape, then a missing prompt, then the good request again on the same connection
    cam = next(iter(obs["images"]))
    for bad in ({**obs, "images": {**obs["images"], cam: obs["images"][cam][:-1]}},
                {k: v for k, v in obs.items() if k != "prompt"}):
        try:
            client.infer(bad)
            errors.append("no error")
        except RuntimeError as err:
            errors.append(str(err))
    saved[f"{name}/again"] = client.infer(obs)["actions"]
saved["errors"] = np.array(json.dumps(errors))
saved["embodiments"] = np.array(json.dumps(sorted(metadata["embodiments"])))
np.savez(out, **saved)
