"""Observation -> model inputs and model outputs -> robot actions, identical in training and serving.

One object owns the prompt format, image preprocessing, normalization and padding (openpi's
transforms / LeRobot's processors: they travel with the checkpoint, so a policy cannot be served
with statistics or a tokenizer other than the ones it was trained with).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from components import action_space
from components.embodiment import Embodiments, EmbodimentSpec
from components.errors import CheckpointError
from components.normalization import NormStats, load_stats, save_stats

IMAGE_MARK = "<|image_pad|>"


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` uint8 [H, W, 3] at ``height`` x ``width`` (bilinear; unchanged when already that size)."""
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


class VLAProcessor:
    def __init__(self, tokenizer, image_processor, embodiments: Embodiments,
                 norm_stats: dict[str, dict[str, NormStats]] | None, image_size: tuple[int, int]):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.embodiments = embodiments
        self.norm_stats = norm_stats or {}
        self.image_size = tuple(image_size)
        merge = image_processor.merge_size
        patch = image_processor.patch_size
        self.tokens_per_image = (self.image_size[0] // patch) * (self.image_size[1] // patch) // (merge * merge)
        self._prompt_ids = lru_cache(maxsize=256)(self._build_prompt_ids)
        self._turn_start_id = tokenizer.convert_tokens_to_ids("<|im_start|>")
        self.motion_cameras: tuple[str, ...] = ()
        self.motion_size: tuple[int, int] = (0, 0)

    def set_motion(self, cameras, size) -> None:
        """Add the frames of ``cameras`` at ``size`` (h, w) to each sample, for a decoder with a motion
        adapter (``DiTConfig.motion_adapter``); ``()`` adds none."""
        self.motion_cameras, self.motion_size = tuple(cameras), tuple(size)

    # ---- prompt ------------------------------------------------------------------------------
    def prompt_text(self, spec: EmbodimentSpec, instruction: str) -> str:
        images = "".join(f"{cam}: <|vision_start|>{IMAGE_MARK * self.tokens_per_image}<|vision_end|>\n"
                         for cam in spec.camera_names)
        return (f"<|im_start|>system\n{spec.prompt()}<|im_end|>\n"
                f"<|im_start|>user\n{images}{instruction}<|im_end|>\n")

    def _build_prompt_ids(self, embodiment: str, instruction: str) -> tuple[int, ...]:
        text = self.prompt_text(self.embodiments[embodiment], instruction)
        return tuple(self.tokenizer(text, add_special_tokens=False).input_ids)

    # ---- observation -------------------------------------------------------------------------
    def stats(self, embodiment: str) -> dict[str, NormStats]:
        if embodiment not in self.norm_stats:
            raise KeyError(f"no normalization statistics for embodiment '{embodiment}' "
                           f"(have {sorted(self.norm_stats)})")
        return self.norm_stats[embodiment]

    def resize(self, image: np.ndarray) -> np.ndarray:
        return resize_image(image, *self.image_size)

    def encode_observation(self, images: dict[str, np.ndarray], state: np.ndarray | None,
                           instruction: str, embodiment: str) -> dict:
        """One observation -> an unbatched sample (``collate`` batches them)."""
        spec = self.embodiments[embodiment]
        pixels = self.image_processor(images=[self.resize(images[c]) for c in spec.camera_names],
                                      return_tensors="np")
        padded_state = np.zeros(action_space.ACTION_DIM, np.float32)
        if spec.state_dim:
            padded_state = action_space.pad(np.asarray(state, np.float32), spec.state_indices)
            padded_state = self.stats(embodiment)["state"].normalize(padded_state).astype(np.float32)
        sample = {
            "input_ids": (ids := np.asarray(self._prompt_ids(embodiment, instruction), np.int64)),
            # where the user turn (camera tokens + instruction) starts: the last <|im_start|>
            "user_start": int(np.flatnonzero(ids == self._turn_start_id)[-1]),
            "pixel_values": pixels["pixel_values"].astype(np.float32),
            "image_grid_thw": pixels["image_grid_thw"].astype(np.int64),
            "state": padded_state,
            "state_mask": spec.state_mask,
            "dim_mask": spec.action_mask,
        }
        if self.motion_cameras:
            h, w = self.motion_size
            has = all(c in spec.camera_names for c in self.motion_cameras)
            sample["motion_gate"] = np.float32(has)
            sample["motion_frames"] = (np.stack([resize_image(images[c], h, w).transpose(2, 0, 1)
                                                 for c in self.motion_cameras]) if has
                                       else np.zeros((len(self.motion_cameras), 3, h, w), np.uint8))
        return sample

    def encode_actions(self, actions: np.ndarray, time_mask: np.ndarray, embodiment: str) -> dict:
        """Raw ``actions [H, A]`` -> normalized, padded ``[H, D]`` (padding rows zeroed)."""
        spec = self.embodiments[embodiment]
        padded = action_space.pad(actions, spec.action_indices)
        norm = self.stats(embodiment)["action"].normalize(padded).astype(np.float32)
        norm[~time_mask] = 0.0
        return {"actions": norm, "time_mask": np.asarray(time_mask, bool)}

    def decode_actions(self, normalized, embodiment: str) -> np.ndarray:
        """Normalized ``[..., H, D]`` -> raw ``[..., H, A]`` in the embodiment's own slot order."""
        spec = self.embodiments[embodiment]
        x = normalized.detach().cpu().numpy() if isinstance(normalized, torch.Tensor) else normalized
        raw = self.stats(embodiment)["action"].unnormalize(x)
        return action_space.unpad(raw, spec.action_indices).astype(np.float32)

    # ---- batching ----------------------------------------------------------------------------
    def collate(self, samples: list[dict]) -> dict:
        """Pad prompts (right) and action chunks (to the longest horizon) into one batch of tensors."""
        pad_id = self.tokenizer.pad_token_id
        # a few distinct lengths instead of one per batch: CPU kernels are set up once per shape
        length = -(-max(len(s["input_ids"]) for s in samples) // 32) * 32
        ids = np.full((len(samples), length), pad_id, np.int64)
        attn = np.zeros((len(samples), length), np.int64)
        user = np.zeros((len(samples), length), bool)
        for i, s in enumerate(samples):
            ids[i, : len(s["input_ids"])] = s["input_ids"]
            attn[i, : len(s["input_ids"])] = 1
            user[i, s["user_start"]: len(s["input_ids"])] = True
        batch = {
            "input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(attn),
            "user_mask": torch.from_numpy(user),
            "pixel_values": torch.from_numpy(np.concatenate([s["pixel_values"] for s in samples])),
            "image_grid_thw": torch.from_numpy(np.concatenate([s["image_grid_thw"] for s in samples])),
        }
        for key in ("state", "state_mask", "dim_mask") + (("motion_frames", "motion_gate") if "motion_gate" in samples[0] else ()):
            batch[key] = torch.from_numpy(np.stack([s[key] for s in samples]))
        if "actions" in samples[0]:
            horizon = max(len(s["actions"]) for s in samples)
            acts, tmask = zip(*(action_space.pad_time(s["actions"], horizon) for s in samples))
            valid = np.stack([np.pad(s["time_mask"], (0, horizon - len(s["time_mask"]))) for s in samples])
            batch["actions"] = torch.from_numpy(np.stack(acts))
            batch["time_mask"] = torch.from_numpy(valid & np.stack(tmask))
        for key in ("embodiment", "instruction"):
            if key in samples[0]:
                batch[key] = [s[key] for s in samples]
        return batch

    # ---- persistence -------------------------------------------------------------------------
    def save(self, directory: str | Path) -> str:
        """Writes ``embodiments.yaml``, ``norm_stats.json``, ``tokenizer/``; returns the stats sha256."""
        directory = Path(directory)
        self.embodiments.save(directory / "embodiments.yaml")
        self.tokenizer.save_pretrained(directory / "tokenizer")
        self.image_processor.save_pretrained(directory / "tokenizer")
        return save_stats(directory / "norm_stats.json", self.norm_stats)

    @staticmethod
    def load_specs_and_stats(directory: str | Path, stats_sha256: str | None) -> tuple[Embodiments, dict]:
        """A checkpoint directory's embodiment specs and normalization statistics (digest checked; every
        declared embodiment must have statistics)."""
        directory = Path(directory)
        embodiments = Embodiments.load(directory / "embodiments.yaml")
        norm_stats = load_stats(directory / "norm_stats.json", expected_sha256=stats_sha256)
        missing = [spec.name for spec in embodiments if spec.name not in norm_stats]
        if missing:
            raise CheckpointError(f"{directory / 'norm_stats.json'}: no normalization statistics for embodiment(s) "
                                  f"{missing} that embodiments.yaml declares (it has {sorted(norm_stats)}); an embodiment "
                                  f"is added to a checkpoint by training on its data (`vla-stack stats`, then `fit`)")
        return embodiments, norm_stats

    @classmethod
    def load(cls, directory: str | Path, stats_sha256: str | None, image_size) -> "VLAProcessor":
        from transformers import AutoTokenizer, Qwen2VLImageProcessorPil
        directory = Path(directory)
        embodiments, norm_stats = cls.load_specs_and_stats(directory, stats_sha256)
        return cls(tokenizer=AutoTokenizer.from_pretrained(directory / "tokenizer"),
                   image_processor=Qwen2VLImageProcessorPil.from_pretrained(directory / "tokenizer"),
                   embodiments=embodiments, norm_stats=norm_stats, image_size=image_size)
