"""A learned world-model checkpoint (a :class:`~world_model.pipeline.WorldModelPipeline` directory) behind
the :class:`~world_model.base.WorldModel` interface the imagine-execute-verify loop uses."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from components import action_space
from components.checkpoint_io import reading
from components.embodiment import EmbodimentSpec
from world_model.base import Imagination, WorldModelMismatchError, predicted_steps
from world_model.models import ARCHITECTURES, canonical_actions
from world_model.pipeline import (WorldModelPipeline, frames_to_pixels, pixels_to_uint8, require_pipeline)


class LearnedWorldModel:
    """Imagines K candidate chunks in one batched pipeline call; ``encode`` maps a real observation to
    the same latent space (the autoencoder's posterior mean of its side-by-side camera frames)."""

    def __init__(self, pipeline: WorldModelPipeline, name: str = "learned"):
        self.pipeline = pipeline
        for module in (pipeline.vae, pipeline.transformer):
            module.eval()  # serving numerics (e.g. attention's fused inference path) as after from_pretrained
        self.meta = pipeline.meta
        self.name = name

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "LearnedWorldModel":
        return cls(WorldModelPipeline.from_pretrained(directory), name=Path(directory).name)

    # ---- what it serves ---------------------------------------------------------------------
    @property
    def context_frames(self) -> int:
        return self.meta.context_frames

    @property
    def execute_steps(self) -> int:
        return self.meta.execute_steps

    def check_compatible(self, spec: EmbodimentSpec, env=None, context_frames: int | None = None,
                         execute_steps: int | None = None) -> None:
        """Raise WorldModelMismatchError naming the field (slot table, embodiment, action slots, cameras,
        frame size, context length, execute steps), what the checkpoint has and what was needed.
        ``context_frames``: how many observations the loop keeps; ``execute_steps``: what it executes."""
        meta, where = self.meta, f"world model '{self.name}'"

        def refuse(what: str, has, needed) -> None:
            raise WorldModelMismatchError(f"{where} does not fit embodiment '{spec.name}': {what}: the checkpoint "
                                          f"has {has}, needed {needed}")

        if list(meta.slot_table) != list(action_space.CANONICAL_SLOTS):
            changed = [f"{i}: {a} vs {b}" for i, (a, b) in enumerate(zip(meta.slot_table, action_space.CANONICAL_SLOTS))
                       if a != b] or [f"{len(meta.slot_table)} vs {action_space.ACTION_DIM} slots"]
            refuse("canonical slot table", f"another table ({', '.join(changed[:3])})", "this code's table")
        if spec.name not in meta.embodiments:
            refuse("embodiment", f"embodiments {sorted(meta.embodiments)}", f"'{spec.name}'")
        entry = meta.embodiments[spec.name]
        has_slots = [(s["canonical"], float(s["low"]), float(s["high"])) for s in entry["action_slots"]]
        needed_slots = [(s.canonical, s.low, s.high) for s in spec.action_slots]
        if has_slots != needed_slots:
            refuse("action slots (canonical slot, low, high)", has_slots, needed_slots)
        if list(meta.cameras) != [c for c in spec.camera_names if c in meta.cameras] or \
                any(c not in spec.camera_names for c in meta.cameras):
            refuse("cameras", list(meta.cameras), f"a subset of the policy's {spec.camera_names}")
        sizes = {c.name: [c.height, c.width] for c in spec.cameras if c.name in meta.cameras}
        env_sizes = _env_camera_sizes(env, meta.cameras)
        for camera in meta.cameras:
            trained = list(entry["cameras"][camera])
            for source, size in (("the policy's spec", sizes[camera]), ("the env", env_sizes.get(camera))):
                if size is not None and list(size) != trained:
                    refuse(f"frame size of camera '{camera}'", f"{trained[0]}x{trained[1]} frames (resized to "
                           f"{meta.frame_height}x{meta.frame_width})", f"{size[0]}x{size[1]} from {source}")
        if context_frames is not None and context_frames < meta.context_frames:
            refuse("context length", f"{meta.context_frames} context frames", f"at most {context_frames}")
        if execute_steps is not None and execute_steps != meta.execute_steps:
            refuse("execute steps", f"predictions for {meta.execute_steps} executed steps "
                   f"(frames at {predicted_steps(meta.execute_steps, meta.num_frames)})", execute_steps)

    def begin_episode(self, env) -> None:
        """Nothing to keep: a learned model sees only observations."""

    # ---- imagining --------------------------------------------------------------------------
    def _context(self, history: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents ``[Fc, C, h, w]`` of the last ``context_frames`` observations (the oldest repeated
        when the episode has fewer, as in training at an episode's start) and their pixels."""
        if not history:
            raise ValueError("imagine needs at least the current observation in history")
        obs = list(history[-self.meta.context_frames:])
        obs = [obs[0]] * (self.meta.context_frames - len(obs)) + obs
        images = {c: np.stack([o["images"][c] for o in obs]) for c in self.meta.cameras}
        pixels = frames_to_pixels(images, self.meta)
        return self.pipeline.encode(pixels), pixels

    def imagine(self, history: list[dict], chunks: np.ndarray, spec: EmbodimentSpec, execute_steps: int,
                seed: int | None = None, num_inference_steps: int | None = None) -> Imagination:
        start = time.perf_counter()
        if execute_steps != self.meta.execute_steps:
            self.check_compatible(spec, execute_steps=execute_steps)
        chunks = np.asarray(chunks, dtype=np.float32)
        k = chunks.shape[0]
        actions, time_mask, dim_mask = (torch.as_tensor(a) for a in canonical_actions(chunks, spec))
        index = torch.full((k,), int(self.meta.embodiments[spec.name]["index"]), dtype=torch.long)
        context, context_pixels = self._context(history)
        generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
        latents, pixels = self.pipeline(context[None].expand(k, -1, -1, -1, -1), actions, time_mask, dim_mask, index,
                                        num_inference_steps=num_inference_steps, generator=generator,
                                        last_pixels=context_pixels[-1:].expand(k, -1, -1, -1))
        return Imagination(latents=latents.numpy(), frames=pixels_to_uint8(pixels),
                           steps=predicted_steps(execute_steps, self.meta.num_frames),
                           imagine_ms=1000.0 * (time.perf_counter() - start),
                           info={"world_model": self.name, "architecture": type(self.pipeline.transformer).__name__,
                                 "num_inference_steps": num_inference_steps or self.meta.num_inference_steps})

    def encode(self, obs: dict, spec: EmbodimentSpec) -> np.ndarray:
        images = {c: np.asarray(obs["images"][c])[None] for c in self.meta.cameras}
        return self.pipeline.encode(frames_to_pixels(images, self.meta))[0].numpy()


def _env_camera_sizes(env, cameras: list[str]) -> dict[str, tuple[int, int]]:
    """``{camera: (height, width)}`` from ``env.observation_space["images"]`` where the env declares it."""
    space = getattr(getattr(env, "unwrapped", env), "observation_space", None) if env is not None else None
    try:
        images = space["images"]
        return {c: tuple(images[c].shape[:2]) for c in cameras if c in images.spaces}
    except (KeyError, TypeError, AttributeError):
        return {}


def load_world_model(path: str | Path) -> LearnedWorldModel:
    """A learned world model from a pipeline directory, whichever architecture its ``transformer/`` holds."""
    directory = require_pipeline(path)
    import json
    index_file = directory / "model_index.json"
    with reading(index_file, "the pipeline index"):
        library, class_name = json.loads(index_file.read_text())["transformer"]
    known = {cls.__name__ for cls in ARCHITECTURES.values()}
    if class_name not in known:
        raise WorldModelMismatchError(f"{index_file}: transformer class '{library}.{class_name}' is not a world-model "
                                      f"architecture of this code (known: {sorted(known)})")
    return LearnedWorldModel.from_pretrained(directory)
