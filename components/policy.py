"""The policy API: one checkpoint, any of its embodiments, K candidate chunks per observation.

    policy = Policy.from_pretrained("runs/vla_tiny/pretrained")
    chunks = policy.sample(obs, embodiment="aloha", instruction="...", num_samples=8)  # [K, H, 14]

Every action value that leaves ``sample`` lies inside the range its embodiment spec declares:
decoding clips to it, and a non-finite output becomes the spec's ``safe_action`` or an error.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from components.checkpoint_io import reading, require_files, require_tokenizer
from components.embodiment import EmbodimentSpec
from components.errors import CheckpointNotFoundError, UsageError, VLAStackError
from components.onnx_export import OnnxBackbone, OnnxDecoder
from components.processor import VLAProcessor
from components.vla import VLA

DECODER_FILE = "decoder.onnx"
BACKBONE_DIR = "backbone"  # <embodiment>.onnx + index.json (captured prompt lengths)
RUNTIMES = ("torch", "onnxruntime")


@dataclass
class LimitedChunks:
    """Candidate chunks ``[K, H, A]`` held to the spec's limits, with how many values that changed."""
    chunks: np.ndarray
    clipped: int     # finite values outside their slot's range, clipped to it
    nonfinite: int   # non-finite values, whose time steps became the spec's safe action


class ObservationError(VLAStackError, ValueError):
    """An observation does not match what the embodiment spec declares."""


def validate_observation(obs: dict, spec: EmbodimentSpec) -> None:
    """Check ``obs = {"images": {camera: uint8 [H,W,3]}, "state": [S]}`` against the spec, before any model runs."""
    where = f"observation for embodiment '{spec.name}'"
    if not isinstance(obs, dict) or "images" not in obs or not isinstance(obs["images"], dict):
        raise ObservationError(f"{where}: expected a dict with 'images' (camera name -> uint8 HxWx3 array) "
                               f"and 'state'; got {type(obs).__name__} with keys "
                               f"{sorted(obs) if isinstance(obs, dict) else '-'}")
    for cam in spec.cameras:
        if cam.name not in obs["images"]:
            raise ObservationError(f"{where}: missing camera '{cam.name}' (cameras given: "
                                   f"{sorted(obs['images'])}; the spec needs {spec.camera_names})")
        img = np.asarray(obs["images"][cam.name])
        if img.dtype != np.uint8:
            raise ObservationError(f"{where}: camera '{cam.name}' image has dtype {img.dtype}, expected uint8 "
                                   f"(0..255 RGB)")
        if img.shape != (cam.height, cam.width, 3):
            raise ObservationError(f"{where}: camera '{cam.name}' image has shape {img.shape}, expected "
                                   f"({cam.height}, {cam.width}, 3) as declared in {spec.source}")
    if spec.state_dim:
        if obs.get("state") is None:
            raise ObservationError(f"{where}: missing 'state' ({spec.state_dim} values: "
                                   f"{[s.name for s in spec.state_slots]})")
        state = np.asarray(obs["state"], dtype=np.float64)
        if state.shape != (spec.state_dim,):
            raise ObservationError(f"{where}: 'state' has shape {state.shape}, expected ({spec.state_dim},) "
                                   f"for slots {[s.name for s in spec.state_slots]}")
        bad = ~np.isfinite(state)
        if bad.any():
            names = [spec.state_slots[i].name for i in np.flatnonzero(bad)]
            raise ObservationError(f"{where}: 'state' has NaN/inf in slot(s) {names}")


class Policy:
    def __init__(self, vla: VLA, processor: VLAProcessor, onnx_decoder: OnnxDecoder | None = None,
                 onnx_backbone: OnnxBackbone | None = None):
        self.vla = vla.eval()
        self.processor = processor
        processor.set_motion(vla.config.decoder.motion_adapter, vla.config.decoder.motion_size)
        self.onnx_decoder = onnx_decoder
        self.onnx_backbone = onnx_backbone

    @classmethod
    def from_pretrained(cls, directory: str | Path, decoder: str = "torch", runtime: str = "torch") -> "Policy":
        """``decoder``: "torch" or "onnx" (``decoder.onnx`` written by ``vla-stack export`` into the
        directory, or its ``--out``); ``runtime``: "torch" or "onnxruntime" (the whole policy: the exported
        backbone graphs and decoder; the motion adapter, where a model has one, stays in torch)."""
        if decoder not in ("torch", "onnx"):
            raise UsageError(f"decoder must be 'torch' or 'onnx', got '{decoder}'")
        if runtime not in RUNTIMES:
            raise UsageError(f"runtime must be one of {list(RUNTIMES)}, got '{runtime}'")
        directory = require_files(directory)
        require_tokenizer(directory)
        needs = [(DECODER_FILE, decoder == "onnx" or runtime == "onnxruntime",
                  "runtime='onnxruntime'" if runtime == "onnxruntime" else "decoder='onnx'"),
                 (f"{BACKBONE_DIR}/index.json", runtime == "onnxruntime", "runtime='onnxruntime'")]
        for name, needed, why in needs:
            if needed and not (directory / name).exists():
                raise CheckpointNotFoundError(f"{directory}: no exported graph ({name}) for {why}; "
                                              f"run `vla-stack export --policy {directory} --out DIR` and load DIR")
        vla, raw = VLA.from_pretrained(directory)
        with reading(directory, "the processor (embodiments.yaml, norm_stats.json, tokenizer/)"):
            processor = VLAProcessor.load(directory, raw.get("norm_stats_sha256"), vla.config.backbone.image_size)
        onnx = OnnxDecoder(directory / DECODER_FILE) if decoder == "onnx" or runtime == "onnxruntime" else None
        backbone = None
        if runtime == "onnxruntime":
            with reading(directory / BACKBONE_DIR, "the exported backbone graphs"):
                backbone = OnnxBackbone(directory / BACKBONE_DIR, vla.backbone, processor.tokenizer.pad_token_id)
        return cls(vla, processor, onnx, backbone)

    @property
    def embodiments(self) -> list[str]:
        return self.processor.embodiments.names()

    def batch(self, obs: dict, embodiment: str, instruction: str) -> dict:
        spec = self.processor.embodiments[embodiment]
        validate_observation(obs, spec)
        return self.processor.collate([self.processor.encode_observation(
            obs["images"], obs.get("state"), instruction, embodiment)])

    def sample(self, obs: dict, embodiment: str, instruction: str, num_samples: int = 1,
               num_steps: int | None = None, seed: int | None = None) -> np.ndarray:
        """K candidate chunks ``[K, H, A]`` in the embodiment's units and slot order, inside its limits."""
        return self.sample_limited(obs, embodiment, instruction, num_samples, num_steps, seed).chunks

    def sample_limited(self, obs: dict, embodiment: str, instruction: str, num_samples: int = 1,
                       num_steps: int | None = None, seed: int | None = None) -> LimitedChunks:
        """:meth:`sample` plus the counts of clipped and non-finite values (what a run reports)."""
        raw = self._sample_raw(obs, embodiment, instruction, num_samples, num_steps, seed)
        return LimitedChunks(*self.processor.embodiments[embodiment].limit_actions(raw))

    @torch.no_grad()
    def _sample_raw(self, obs: dict, embodiment: str, instruction: str, num_samples: int,
                    num_steps: int | None, seed: int | None) -> np.ndarray:
        """The decoder's chunks ``[K, H, A]`` before the limits: callers go through :meth:`sample_limited`."""
        spec = self.processor.embodiments[embodiment]
        batch = self.batch(obs, embodiment, instruction)
        noise = self._noise(spec, num_samples, seed)
        if self.onnx_decoder is not None:
            if num_steps not in (None, self.onnx_decoder.num_steps):
                raise ValueError(f"the exported decoder integrates {self.onnx_decoder.num_steps} steps; "
                                 f"num_steps={num_steps} needs a new export")
            if self.onnx_backbone is not None:
                prefix = self.onnx_backbone(batch, embodiment)
            else:
                prefix = self.vla.backbone(batch["input_ids"], batch["attention_mask"], batch["pixel_values"],
                                           batch["image_grid_thw"])
            chunks = self.onnx_decoder(noise, prefix, self.vla.decoder_mask(batch), batch["state"],
                                       batch["state_mask"], batch["dim_mask"], self.vla.image_mask(batch),
                                       self.vla.motion(batch))
        else:
            chunks = self.vla.sample(batch, spec.chunk_horizon, num_samples, num_steps, noise=noise)
        return self.processor.decode_actions(chunks[0], embodiment)

    def _noise(self, spec: EmbodimentSpec, num_samples: int, seed: int | None) -> torch.Tensor:
        """The initial flow noise ``[1, K, H, D]`` of one observation: seeded, or from torch's global RNG."""
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        return torch.randn((1, num_samples, spec.chunk_horizon, self.vla.config.decoder.action_dim),
                           generator=generator)

    @torch.no_grad()
    def sample_batch(self, requests: list[tuple[dict, str, str]], seeds: list[int | None] | None = None,
                     num_samples: int = 1, num_steps: int | None = None) -> list[LimitedChunks]:
        """:meth:`sample_limited` for several ``(obs, embodiment, instruction)`` at once: per request the
        same chunks (same noise for the same seed), from one backbone + decoder call per chunk horizon
        (requests of embodiments with the same horizon share it). What the policy server batches."""
        seeds = list(seeds) if seeds is not None else [None] * len(requests)
        if len(seeds) != len(requests):
            raise UsageError(f"sample_batch: {len(requests)} requests but {len(seeds)} seeds")
        if self.onnx_decoder is not None:  # the exported graph is traced for one observation
            return [self.sample_limited(o, e, i, num_samples, num_steps, s) for (o, e, i), s in zip(requests, seeds)]
        specs = [self.processor.embodiments[e] for _, e, _ in requests]
        samples = []
        for (obs, embodiment, instruction), spec in zip(requests, specs):
            validate_observation(obs, spec)
            samples.append(self.processor.encode_observation(obs["images"], obs.get("state"), instruction,
                                                             embodiment))
        noise = [self._noise(spec, num_samples, seed) for spec, seed in zip(specs, seeds)]
        out: list[LimitedChunks | None] = [None] * len(requests)
        for horizon in dict.fromkeys(spec.chunk_horizon for spec in specs):
            group = [i for i, spec in enumerate(specs) if spec.chunk_horizon == horizon]
            batch = self.processor.collate([samples[i] for i in group])
            chunks = self.vla.sample(batch, horizon, num_samples, num_steps, noise=torch.cat([noise[i] for i in group]))
            for row, i in enumerate(group):
                raw = self.processor.decode_actions(chunks[row], requests[i][1])
                out[i] = LimitedChunks(*specs[i].limit_actions(raw))
        return out

    @property
    def motion_history(self):
        """The decoder's motion history (components/odometry.py: the `video` embodiment's waypoints), or None."""
        return getattr(self.vla.decoder, "motion_history", None)

    @torch.no_grad()
    def motion_waypoints(self, clips: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``clips`` uint8 ``[B, pairs + 1, H, W, 3]`` (oldest first) and ``valid`` bool ``[B, pairs + 1]`` ->
        waypoints ``[B, horizon, 4]`` (x_forward_m, y_left_m, cos, sin) from the motion history."""
        from components.processor import resize_image

        net = self.motion_history
        if net is None:
            raise UsageError("this checkpoint's decoder has no motion history (decoder.motion_history)")
        h, w = net.size
        x = np.stack([[resize_image(f, h, w).transpose(2, 0, 1) for f in clip] for clip in clips])
        wp, _ = net(torch.from_numpy(x), torch.from_numpy(np.asarray(valid, bool)))
        return wp.float().numpy()

    def describe(self) -> str:
        cfg = self.vla.config
        n = sum(p.numel() for p in self.vla.parameters())
        return json.dumps({"embodiments": self.embodiments, "parameters": n,
                           "num_flow_steps": cfg.num_flow_steps,
                           "decoder": "onnxruntime" if self.onnx_decoder else "torch",
                           "backbone": "onnxruntime" if self.onnx_backbone else "torch"})
