"""The vision-language backbone: a Qwen-family VLM from transformers, run once per observation.

Three sources, one class: ``config`` builds the architecture from a config dict (the ``tiny`` and
``full`` presets under ``configs/model/``), ``path`` loads a real checkpoint (model, tokenizer and
image processor) from a local directory. The output is the last hidden state of the language
model over the whole prompt (embodiment prompt, images, instruction): the prefix the action
decoder cross-attends to.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, Qwen2VLImageProcessorPil

from components.errors import ConfigNotFoundError
from components.tokenizer import TINY_TOKENIZER_DIR


@dataclass
class BackboneConfig:
    """``source``: "config" (build ``hf_config`` from scratch) or "path" (load ``path``)."""
    source: str = "config"
    hf_config: dict = field(default_factory=dict)
    path: str | None = None
    tokenizer: str | None = None  # directory; None: the committed tiny tokenizer (config) or ``path``
    image_size: tuple[int, int] = (128, 128)  # every camera image is resized to this (H, W)


def build_hf_config(hf_config: dict):
    cfg = dict(hf_config)
    model_type = cfg.pop("model_type", "qwen3_5")
    return AutoConfig.for_model(model_type, **cfg)


class Backbone(nn.Module):
    """``forward(input_ids [B,L], attention_mask [B,L], pixel_values [P,C], image_grid_thw [N,3])
    -> prefix [B, L, hidden]``."""

    def __init__(self, config: BackboneConfig, hf_config=None, load_weights: bool = True):
        super().__init__()
        self.config = config
        if config.source == "path":
            if not config.path or not Path(config.path, "config.json").exists():
                raise ConfigNotFoundError(
                    f"backbone path '{config.path}' is not a transformers checkpoint directory "
                    f"(expected a config.json there)")
            if load_weights and hf_config is None:
                self.model = AutoModel.from_pretrained(config.path, dtype=torch.float32)
            else:
                self.model = AutoModel.from_config(hf_config or AutoConfig.from_pretrained(config.path))
        elif config.source == "config":
            self.model = AutoModel.from_config(hf_config or build_hf_config(config.hf_config))
        else:
            raise ValueError(f"backbone source must be 'config' or 'path', got '{config.source}'")
        self.image_token_id = self.model.config.image_token_id

    @property
    def hidden_size(self) -> int:
        return self.model.config.text_config.hidden_size

    def forward(self, input_ids, attention_mask, pixel_values, image_grid_thw) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                         image_grid_thw=image_grid_thw,
                         mm_token_type_ids=(input_ids == self.image_token_id).long(), use_cache=False)
        return out.last_hidden_state


def load_tokenizer(config: BackboneConfig):
    """The tokenizer that belongs with a backbone config (committed tiny one, or the checkpoint's)."""
    directory = config.tokenizer or (config.path if config.source == "path" else str(TINY_TOKENIZER_DIR))
    return AutoTokenizer.from_pretrained(directory)


def hf_config_of(config: BackboneConfig):
    if config.source == "path":
        return AutoConfig.from_pretrained(config.path)
    return build_hf_config(config.hf_config)


def make_image_processor(config: BackboneConfig, hf_config=None):
    """Qwen-VL patchifier sized so each camera image becomes exactly ``image_size``."""
    vision = (hf_config or hf_config_of(config)).vision_config
    h, w = config.image_size
    unit = vision.patch_size * vision.spatial_merge_size
    if h % unit or w % unit:
        raise ValueError(f"image_size {tuple(config.image_size)} must be a multiple of "
                         f"patch_size x merge_size = {unit}")
    sizing = dict(min_pixels=h * w, max_pixels=h * w)
    if config.source == "path" and Path(config.path, "preprocessor_config.json").exists():
        # the checkpoint's own normalization constants; only the pixel budget is ours
        return Qwen2VLImageProcessorPil.from_pretrained(config.path, size={"shortest_edge": h * w,
                                                                           "longest_edge": h * w}, **sizing)
    return Qwen2VLImageProcessorPil(patch_size=vision.patch_size, merge_size=vision.spatial_merge_size,
                                    temporal_patch_size=vision.temporal_patch_size, **sizing)
