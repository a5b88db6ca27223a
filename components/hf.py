"""vla-stack checkpoints through the transformers Auto classes and chat messages.

Importing this module registers the config, model and processor (docs/ARCHITECTURE.md, "Using a
policy through transformers")::

    import components.hf
    from transformers import AutoProcessor, AutoModelForCausalLM
    processor = AutoProcessor.from_pretrained(DIR)
    model = AutoModelForCausalLM.from_pretrained(DIR)
    messages = [{"role": "system", "content": processor.embodiment_prompt("aloha")},
                {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": task}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=[image], state=[joints], return_tensors="pt")
    outputs = model.generate(**inputs, seed=0)
    chunk = processor.decode_action(outputs[0])  # [H, A]: the robot's units and slot order, inside its limits

The system message must be a prompt generated from one of the checkpoint's embodiment specs (or
the embodiment's name): a hand-written description that matches none is refused, because a wrong
action-space description silently drives the robot wrong.
"""
from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoProcessor, BatchFeature,
                          PretrainedConfig, PreTrainedModel)

from components.checkpoint_io import reading, require_files, require_tokenizer
from components.embodiment import EmbodimentSpec
from components.errors import UsageError
from components.policy import ObservationError
from components.processor import IMAGE_MARK, VLAProcessor
from components.vla import VLA, VLAConfig

MODEL_TYPE = "vla_stack"
#: keyword arguments the Auto classes pass that mean nothing for a local checkpoint directory
_HUB_KWARGS = {"cache_dir", "force_download", "local_files_only", "proxies", "revision", "token",
               "trust_remote_code", "subfolder", "_from_auto", "_commit_hash", "code_revision",
               "use_safetensors", "low_cpu_mem_usage", "attn_implementation", "adapter_kwargs",
               "adapter_name", "gguf_file", "key_mapping"}


class PromptMismatchError(UsageError):
    """A system message that is no prompt generated from the checkpoint's embodiment specs."""


class VLAStackConfig(PretrainedConfig):
    """The checkpoint's ``config.json`` (``vla``, ``backbone_hf_config``, ``norm_stats_sha256``)."""
    model_type = MODEL_TYPE


def _normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _similarity(a: str, b: str) -> float:
    """Word overlap (Jaccard) plus character similarity: which generated prompt a hand-written one means."""
    wa, wb = (set(re.findall(r"[a-z0-9]+", t.lower())) for t in (a, b))
    jaccard = len(wa & wb) / max(1, len(wa | wb))
    return jaccard + 0.5 * difflib.SequenceMatcher(None, a.lower(), _normalize(b).lower()).ratio()


@dataclass
class GeneratedChunk:
    """One observation's sampled chunks, normalized and padded ``[K, H, D]``, and whose they are."""
    normalized: torch.Tensor
    embodiment: str


class VLAStackModel(PreTrainedModel):
    """The VLA behind ``AutoModel``/``AutoModelForCausalLM``: ``generate`` samples action chunks."""
    config_class = VLAStackConfig
    base_model_prefix = "vla"
    main_input_name = "input_ids"

    def __init__(self, config: VLAStackConfig, vla: VLA | None = None):
        super().__init__(config)
        if vla is None:
            hf = dict(config.backbone_hf_config)
            vla = VLA(VLAConfig.from_dict(config.vla), hf_config=AutoConfig.for_model(hf.pop("model_type"), **hf),
                      load_backbone_weights=False)
        self.vla = vla

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, torch_dtype=None,
                        dtype=None, device_map=None, **kwargs):
        """Load a vla-stack checkpoint directory (local paths only). ``dtype``/``torch_dtype`` casts
        the weights; ``device_map`` may name one device ("cpu", "cuda", "cuda:0")."""
        unknown = sorted(set(kwargs) - _HUB_KWARGS)
        if model_args or unknown:
            raise UsageError(f"{cls.__name__}.from_pretrained: unsupported arguments {unknown or list(model_args)}; "
                             f"it takes a checkpoint directory, dtype/torch_dtype and device_map")
        vla, raw = VLA.from_pretrained(pretrained_model_name_or_path)
        if not isinstance(config, VLAStackConfig):
            config = VLAStackConfig(**{k: v for k, v in raw.items() if k != "model_type"})
        model = cls(config, vla)
        dtype = dtype if dtype is not None else torch_dtype
        if dtype not in (None, "auto"):
            model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
        if device_map is not None:
            if not isinstance(device_map, (str, torch.device)) or device_map == "auto":
                raise UsageError(f"device_map={device_map!r}: a vla-stack model runs on one device; name it "
                                 f"('cpu', 'cuda', 'cuda:0')")
            model.to(device_map)
        return model.eval()

    def forward(self, **inputs):
        """Generation is the only inference path: see :meth:`generate`."""
        return self.generate(**inputs)

    @torch.no_grad()
    def generate(self, input_ids, attention_mask, pixel_values, image_grid_thw, state, state_mask, dim_mask,
                 embodiment: Sequence[str], horizon: Sequence[int], user_mask=None, num_samples: int = 1,
                 num_steps: int | None = None, seed: int | Sequence[int] | None = None,
                 generator: torch.Generator | None = None, do_sample: bool = True,
                 **generation_kwargs) -> list[GeneratedChunk]:
        """Sample ``num_samples`` chunks per observation by flow matching, as ``Policy.sample`` does:
        with ``seed`` the initial noise equals the Policy's for that seed; ``do_sample=False`` uses seed 0.
        Text-generation arguments (``max_new_tokens`` ...) are accepted and unused: actions are not tokens."""
        b = input_ids.shape[0]
        seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed] * b
        if len(seeds) != b:
            raise UsageError(f"generate: {len(seeds)} seeds for {b} observations")
        if not do_sample:
            seeds = [0 if s is None else s for s in seeds]
        param = next(self.vla.parameters())
        dev, dt = param.device, param.dtype
        tensors = {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values,
                   "image_grid_thw": image_grid_thw, "state": state, "state_mask": state_mask,
                   "dim_mask": dim_mask}
        if user_mask is not None:
            tensors["user_mask"] = user_mask
        tensors = {k: v.to(dev, dt) if v.is_floating_point() else v.to(dev) for k, v in tensors.items()}
        pix_per_row = int(pixel_values.shape[0]) // b
        thw_per_row = int(image_grid_thw.shape[0]) // b
        out = []
        for i in range(b):
            row = {k: (v[i * pix_per_row:(i + 1) * pix_per_row] if k == "pixel_values" else
                       v[i * thw_per_row:(i + 1) * thw_per_row] if k == "image_grid_thw" else v[i:i + 1])
                   for k, v in tensors.items()}
            h = int(horizon[i])
            shape = (1, num_samples, h, self.vla.config.decoder.action_dim)
            g = torch.Generator().manual_seed(seeds[i]) if seeds[i] is not None else generator
            noise = torch.randn(shape, generator=g).to(dev, dt)
            chunks = self.vla.sample(row, h, num_samples, num_steps, noise=noise)
            out.append(GeneratedChunk(chunks[0].float().cpu(), embodiment[i]))
        return out


class VLAStackProcessor:
    """Chat messages -> model inputs, and generated chunks -> robot actions (the checkpoint's own
    :class:`VLAProcessor` underneath, so the tensors equal the ones ``Policy`` builds)."""

    def __init__(self, processor: VLAProcessor):
        self.processor = processor

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "VLAStackProcessor":
        directory = require_files(pretrained_model_name_or_path)
        require_tokenizer(directory)
        with reading(directory / "config.json", "the model configuration"):
            raw = json.loads((directory / "config.json").read_text())
            vla_config = VLAConfig.from_dict(raw["vla"])
        with reading(directory, "the processor (embodiments.yaml, norm_stats.json, tokenizer/)"):
            processor = VLAProcessor.load(directory, raw.get("norm_stats_sha256"), vla_config.backbone.image_size)
        processor.set_motion(vla_config.decoder.motion_adapter, vla_config.decoder.motion_size)
        return cls(processor)

    @property
    def embodiments(self) -> list[str]:
        return self.processor.embodiments.names()

    def embodiment_prompt(self, embodiment: str) -> str:
        """The system prompt generated from one of the checkpoint's embodiment specs."""
        if embodiment not in self.processor.embodiments:
            raise UsageError(f"no embodiment '{embodiment}' in this checkpoint (it has {self.embodiments})")
        return self.processor.embodiments[embodiment].prompt()

    def spec_for_system(self, system: str) -> EmbodimentSpec:
        """The embodiment a system message names: its generated prompt or its name, else a clear error."""
        wanted = _normalize(system)
        prompts = {name: self.processor.embodiments[name].prompt() for name in self.embodiments}
        for name, prompt in prompts.items():
            if wanted in (name, _normalize(prompt)):
                return self.processor.embodiments[name]
        closest = max(prompts, key=lambda n: _similarity(wanted, prompts[n]))
        raise PromptMismatchError(
            "the system message is not an embodiment prompt of this checkpoint (a hand-written action-space "
            "description can silently drive the robot wrong); use processor.embodiment_prompt(NAME) or the "
            f"embodiment's name, one of {self.embodiments}. The closest generated prompt ({closest}):\n"
            f"{prompts[closest]}")

    # ---- chat messages --------------------------------------------------------------------------
    def apply_chat_template(self, messages: list[dict], tokenize: bool = False,
                            add_generation_prompt: bool = True, **kwargs) -> str | list[int]:
        """``[system, user]`` messages -> the exact prompt text the model was trained on. The user turn
        holds one image per camera of the embodiment (in the spec's order) and the task text.
        ``add_generation_prompt`` adds nothing: the decoder reads the prompt, no assistant text is generated."""
        spec, instruction, n_images = self._parse_messages(messages)
        if n_images != len(spec.cameras):
            raise UsageError(f"the user message has {n_images} image(s); embodiment '{spec.name}' has "
                             f"{len(spec.cameras)} camera(s) {spec.camera_names}: give one image per camera, "
                             f"in that order")
        text = self.processor.prompt_text(spec, instruction)
        return list(self.processor.tokenizer(text, add_special_tokens=False).input_ids) if tokenize else text

    def _parse_messages(self, messages) -> tuple[EmbodimentSpec, str, int]:
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise UsageError("messages: expected a list of {'role': ..., 'content': ...} dicts")
        roles = [m["role"] for m in messages]
        if roles != ["system", "user"]:
            raise UsageError(f"messages: expected roles ['system', 'user'] (the embodiment prompt, then the "
                             f"camera image(s) and the task); got {roles}")
        system = self._text_of(messages[0]["content"], "system")
        spec = self.spec_for_system(system)
        content = messages[1]["content"]
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        texts, n_images = [], 0
        for part in parts:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "image":
                n_images += 1
            elif kind == "text":
                texts.append(str(part.get("text", "")))
            else:
                raise UsageError(f"user message: content parts must be {{'type': 'image'}} or "
                                 f"{{'type': 'text', 'text': ...}}; got {part!r}")
        return spec, " ".join(t.strip() for t in texts if t.strip()), n_images

    @staticmethod
    def _text_of(content, role: str) -> str:
        if isinstance(content, str):
            return content
        if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
            return "\n".join(str(p.get("text", "")) for p in content)
        raise UsageError(f"the {role} message must be text")

    # ---- model inputs ----------------------------------------------------------------------------
    def _parse_text(self, text: str) -> tuple[EmbodimentSpec, str]:
        m = re.fullmatch(r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n<\|im_start\|>user\n(.*)<\|im_end\|>\n?",
                         text, re.S)
        if m is None:
            raise UsageError("text: expected a prompt rendered by processor.apply_chat_template(messages)")
        spec = self.spec_for_system(m.group(1))
        user = m.group(2)
        instruction = user.rsplit("<|vision_end|>\n", 1)[-1] if IMAGE_MARK in user else user
        if self.processor.prompt_text(spec, instruction) != text:
            raise UsageError(f"text: its camera block does not match embodiment '{spec.name}' (cameras "
                             f"{spec.camera_names}); render it with processor.apply_chat_template(messages)")
        return spec, instruction

    def __call__(self, text: str | list[str], images: Any = None, state: Any = None,
                 return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """Prompts + their images (one per camera, flat, in order) + each robot's state -> a batch for
        ``model.generate``. Images of another size are resized to the spec's camera size."""
        if return_tensors not in ("pt", None):
            raise UsageError(f"return_tensors={return_tensors!r}: only 'pt' (torch) is supported")
        texts = [text] if isinstance(text, str) else list(text)
        flat = [] if images is None else ([images] if isinstance(images, (Image.Image, np.ndarray)) else list(images))
        states = list(state) if state is not None else [None] * len(texts)
        if state is not None and len(states) != len(texts):
            raise UsageError(f"state: {len(states)} entries for {len(texts)} prompts (one per prompt)")
        samples, names, horizons = [], [], []
        for i, t in enumerate(texts):
            spec, instruction = self._parse_text(t)
            cams = flat[:len(spec.cameras)]
            flat = flat[len(spec.cameras):]
            if len(cams) != len(spec.cameras):
                raise UsageError(f"images: prompt {i} (embodiment '{spec.name}') needs {len(spec.cameras)} "
                                 f"image(s), one per camera {spec.camera_names}; not enough were given")
            obs_images = {c.name: _rgb(img, c.height, c.width) for c, img in zip(spec.cameras, cams)}
            st = states[i]
            if spec.state_dim:
                if st is None:
                    raise ObservationError(f"state: embodiment '{spec.name}' reads the robot's state "
                                           f"({spec.state_dim} values: {[s.name for s in spec.state_slots]}); "
                                           f"pass processor(..., state=[...])")
                st = np.asarray(st, dtype=np.float64).reshape(-1)
                if st.shape != (spec.state_dim,) or not np.isfinite(st).all():
                    raise ObservationError(f"state for prompt {i}: expected {spec.state_dim} finite values "
                                           f"{[s.name for s in spec.state_slots]}, got {st.tolist()}")
            samples.append(self.processor.encode_observation(obs_images, st, instruction, spec.name))
            names.append(spec.name)
            horizons.append(spec.chunk_horizon)
        if flat:
            raise UsageError(f"images: {len(flat)} image(s) left over after one per camera of each prompt")
        batch = self.processor.collate(samples)
        batch["embodiment"] = names
        batch["horizon"] = horizons
        return BatchFeature(data=batch)

    def decode_action(self, output: GeneratedChunk) -> np.ndarray:
        """A generated chunk -> ``[H, A]`` (``[K, H, A]`` for K > 1 samples) in the robot's units and
        slot order, held to the spec's limits exactly as ``Policy.sample`` holds them."""
        if not isinstance(output, GeneratedChunk):
            raise UsageError(f"decode_action: expected one element of model.generate(...)'s output, got "
                             f"{type(output).__name__}")
        raw = self.processor.decode_actions(output.normalized, output.embodiment)
        limited, _, _ = self.processor.embodiments[output.embodiment].limit_actions(raw)
        return limited[0] if limited.shape[0] == 1 else limited


def _rgb(image, height: int, width: int) -> np.ndarray:
    """A PIL image or an HxWx3 array -> uint8 RGB ``[height, width, 3]``."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ObservationError(f"images: expected HxWx3 RGB arrays, got shape {image.shape}")
        image = Image.fromarray(image.astype(np.uint8) if image.dtype != np.uint8 else image)
    elif not isinstance(image, Image.Image):
        raise ObservationError(f"images: expected PIL images or HxWx3 uint8 arrays, got {type(image).__name__}")
    image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


AutoConfig.register(MODEL_TYPE, VLAStackConfig, exist_ok=True)
AutoModel.register(VLAStackConfig, VLAStackModel, exist_ok=True)
AutoModelForCausalLM.register(VLAStackConfig, VLAStackModel, exist_ok=True)
AutoProcessor.register(VLAStackConfig, VLAStackProcessor, exist_ok=True)
