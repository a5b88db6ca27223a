"""The action decoder as an ONNX graph: the whole N-step Euler loop, cross K/V computed once inside.

The backbone stays in torch (it runs once per observation); the decoder loop, which runs N times
per chunk, goes to onnxruntime.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from components.dit import DiT
from components.vla import euler_integrate

INPUTS = ["noise", "prefix", "prefix_mask", "state", "state_mask", "dim_mask", "image_mask", "motion"]


class DecoderSampler(nn.Module):
    """``noise [B,K,H,D]``, ``prefix [B,L,P]``, ``prefix_mask [B,L]``, ``state/state_mask/dim_mask [B,D]``,
    ``image_mask [B,L]`` (camera tokens, for the image readout; ignored without one), ``motion [B, 2*hidden + 1]``
    (the motion adapter's output, ``VLA.motion``; ignored without one) -> normalized chunks ``[B,K,H,D]``."""

    def __init__(self, dit: DiT, num_steps: int):
        super().__init__()
        self.dit = dit
        self.num_steps = num_steps

    def forward(self, noise, prefix, prefix_mask, state, state_mask, dim_mask, image_mask, motion):
        b, k, h, d = noise.shape

        def per_candidate(x):  # [B, ...] -> [B*K, ...] without a data-dependent repeat count
            return x[:, None].expand(b, k, *x.shape[1:]).reshape(b * k, *x.shape[1:])

        kv, cond = self.dit.encode_prefix(prefix, image_mask > 0)  # [B, ...]: the K candidates share it
        st, sm, dm = per_candidate(state), per_candidate(state_mask), per_candidate(dim_mask)

        def velocity(x, t):
            return self.dit(x, t, st, sm, dm, kv, prefix_mask > 0, cond=cond,
                            motion=motion if self.dit.cfg.motion_adapter else None)

        out = euler_integrate(velocity, noise.reshape(b * k, h, d), dm[:, None, :], self.num_steps)
        return out.reshape(b, k, h, d)


def image_mask_input(vla, batch: dict) -> torch.Tensor:
    """The exported graph's ``image_mask`` input for a collated batch (all zeros without a readout)."""
    mask = vla.image_mask(batch)
    return torch.zeros_like(batch["attention_mask"]) if mask is None else mask.long()


def motion_input(vla, batch: dict) -> torch.Tensor:
    """The exported graph's ``motion`` input for a collated batch (zeros without a motion adapter)."""
    motion = vla.motion(batch)
    return torch.zeros(batch["input_ids"].shape[0], 2 * vla.config.decoder.hidden + 1) if motion is None else motion


def example_inputs(dit: DiT, batch: int = 1, k: int = 2, horizon: int = 8, length: int = 24):
    d, p = dit.cfg.action_dim, dit.cfg.prefix_dim
    return (torch.randn(batch, k, horizon, d), torch.randn(batch, length, p),
            torch.ones(batch, length, dtype=torch.int64), torch.randn(batch, d),
            torch.ones(batch, d), torch.ones(batch, d), (torch.arange(length) % 2).expand(batch, length).contiguous(),
            torch.cat([torch.randn(batch, 2 * dit.cfg.hidden), torch.ones(batch, 1)], dim=1))


def export_decoder(dit: DiT, num_steps: int, path: str | Path) -> Path:
    """Export the decoder loop with dynamic batch, candidates, horizon and prefix length."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = DecoderSampler(dit.eval(), num_steps).eval()
    batch, k, horizon, length = (torch.export.Dim(n, min=m, max=x) for n, m, x in
                                 (("batch", 1, 256), ("k", 1, 64), ("horizon", 2, dit.cfg.max_horizon),
                                  ("length", 2, 8192)))
    shapes = ({0: batch, 1: k, 2: horizon}, {0: batch, 1: length}, {0: batch, 1: length},
              {0: batch}, {0: batch}, {0: batch}, {0: batch, 1: length}, {0: batch})
    with torch.no_grad():
        program = torch.onnx.export(module, example_inputs(dit), dynamo=True, input_names=INPUTS,
                                    output_names=["chunks"], dynamic_shapes=shapes)
    tmp = path.with_suffix(".tmp.onnx")
    program.save(str(tmp))
    tmp.rename(path)
    path.with_suffix(".json").write_text(json.dumps({"num_steps": num_steps, "inputs": INPUTS}, indent=2))
    return path


class OnnxDecoder:
    """Runs an exported decoder with onnxruntime; same call as ``DecoderSampler``, numpy in/out."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no exported decoder at '{path}': run `vla-stack export --policy DIR --out DIR`")
        opts = ort.SessionOptions()
        # as many threads as torch uses, so the two are compared (and deployed) alike
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.num_steps = json.loads(path.with_suffix(".json").read_text())["num_steps"]

    def __call__(self, noise, prefix, prefix_mask, state, state_mask, dim_mask, image_mask=None,
                 motion=None) -> np.ndarray:
        def np32(x, dtype=np.float32):
            return (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(dtype)
        feed = {"noise": np32(noise), "prefix": np32(prefix), "prefix_mask": np32(prefix_mask, np.int64),
                "state": np32(state), "state_mask": np32(state_mask), "dim_mask": np32(dim_mask),
                "image_mask": np.zeros(np.shape(prefix_mask), np.int64) if image_mask is None
                else np32(image_mask, np.int64),
                "motion": None if motion is None else np32(motion)}
        # an export may lack an unused input (onnx drops some); an unused motion input gets zeros of its width
        inputs = {i.name: i for i in self.session.get_inputs()}
        if feed["motion"] is None and "motion" in inputs:
            feed["motion"] = np.zeros((np.shape(prefix_mask)[0], inputs["motion"].shape[1]), np.float32)
        feed = {k: v for k, v in feed.items() if k in inputs}
        return self.session.run(["chunks"], feed)[0]
