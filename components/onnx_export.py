"""The policy as ONNX graphs for onnxruntime: the decoder's whole N-step Euler loop (cross K/V computed
once inside), and the backbone as one fixed-shape graph per embodiment.

The backbone graph is captured at a fixed prompt length per embodiment (prompts are right-padded to it;
a longer prompt is refused, never truncated) with the embodiment's image grid baked in, since the
vision tower's per-image attention and positions depend on the grid (see ``BackboneGraph``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from components.dit import DiT
from components.errors import UsageError
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


def session_options(threads: int | None = None):
    """onnxruntime options for the policy's graphs: as many threads as torch uses (so the two are compared and
    deployed alike), and no spinning, since idle spinning threads would take the cores from torch."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


class OnnxDecoder:
    """Runs an exported decoder with onnxruntime; same call as ``DecoderSampler``, numpy in/out."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no exported decoder at '{path}': run `vla-stack export --policy DIR --out DIR`")
        self.session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
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


BACKBONE_INPUTS = ["input_ids", "attention_mask", "position_ids", "pixel_values"]
BLOCK_ATTENTION = "flash_equal_blocks"  # the name must contain "flash": transformers then passes the image bounds


def _equal_blocks_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0,
                            max_length_q=None, **kwargs):
    """The vision tower's per-image attention for images of one size (``max_length_q`` patches each):
    ``[1, heads, P, d]`` is folded to ``[P / m, heads, m, d]``, which needs no data-dependent split."""
    _, heads, patches, dim = query.shape

    def per_image(x):
        return x[0].reshape(heads, patches // max_length_q, max_length_q, dim).transpose(0, 1)

    out = F.scaled_dot_product_attention(per_image(query), per_image(key), per_image(value), scale=scaling)
    return out.transpose(1, 2).reshape(1, patches, heads, dim), None


class BackboneGraph(nn.Module):
    """The backbone for one embodiment's image grid: ``input_ids/attention_mask [1, L]``, ``position_ids
    [3, 1, L]`` (multimodal RoPE, from ``rope_positions``), ``pixel_values [P, C]`` -> ``prefix [1, L, hidden]``.

    The grid-derived vision inputs (patch positions, position-embedding interpolation, image bounds) are
    constants, computed by transformers' own helpers."""

    def __init__(self, backbone, grid_thw: torch.Tensor):
        super().__init__()
        from transformers.vision_utils import (get_vision_attention_seqlens, get_vision_interpolation_indices_and_weights,
                                               get_vision_position_ids)
        self.model = backbone.model
        visual = self.model.visual
        sizes = (grid_thw[:, 1] * grid_thw[:, 2]).tolist()
        if len(set(sizes)) != 1 or (grid_thw[:, 0] != 1).any():
            raise UsageError(f"the backbone export needs single-frame images of one size; got grid {grid_thw.tolist()}")
        self.patches_per_image = sizes[0]
        self.register_buffer("grid", grid_thw.clone(), persistent=False)
        self.register_buffer("cu_seqlens", get_vision_attention_seqlens(grid_thw, visual.config)[0], persistent=False)
        self.register_buffer("vision_positions", get_vision_position_ids(grid_thw, visual.spatial_merge_size),
                             persistent=False)
        indices, weights = get_vision_interpolation_indices_and_weights(
            grid_thw, num_grid_per_side=visual.num_grid_per_side, mode=visual.interpolation_mode,
            align_corners=visual.interpolation_align_corners, spatial_merge_size=visual.config.spatial_merge_size)
        self.register_buffer("interp_indices", indices, persistent=False)
        self.register_buffer("interp_weights", weights, persistent=False)

    def forward(self, input_ids, attention_mask, position_ids, pixel_values):
        images = self.model.visual(pixel_values, grid_thw=self.grid, cu_seqlens=self.cu_seqlens,
                                   max_seqlen=self.patches_per_image, position_ids=self.vision_positions,
                                   interp_indices=self.interp_indices, interp_weights=self.interp_weights).pooler_output
        embeds = self.model.get_input_embeddings()(input_ids)
        where = (input_ids == self.model.config.image_token_id)[..., None].expand_as(embeds)
        embeds = embeds.masked_scatter(where, images.to(embeds.dtype))
        return self.model.language_model(input_ids=None, position_ids=position_ids, attention_mask=attention_mask,
                                         inputs_embeds=embeds, use_cache=False).last_hidden_state


def rope_positions(backbone, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   grid_thw: torch.Tensor) -> torch.Tensor:
    """The multimodal RoPE positions ``[3, B, L]`` the backbone computes for itself in torch."""
    image = (input_ids == backbone.image_token_id).long()
    return backbone.model.get_rope_index(input_ids, mm_token_type_ids=image, image_grid_thw=grid_thw,
                                         attention_mask=attention_mask)[0]


def export_backbone(backbone, batch: dict, length: int, path: str | Path, pad_id: int = 0) -> Path:
    """Export the backbone for ``batch``'s image grid at prompt length ``length`` (static shapes)."""
    from transformers import AttentionInterface
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids, mask = pad_prompt(batch["input_ids"], batch["attention_mask"], length, pad_id)
    graph = BackboneGraph(backbone, batch["image_grid_thw"]).eval()
    args = (ids, mask, rope_positions(backbone, ids, mask, batch["image_grid_thw"]), batch["pixel_values"])
    AttentionInterface.register(BLOCK_ATTENTION, _equal_blocks_attention)
    config = backbone.model.visual.config
    previous, config._attn_implementation = config._attn_implementation, BLOCK_ATTENTION
    try:
        with torch.no_grad():
            program = torch.onnx.export(graph, args, dynamo=True, input_names=BACKBONE_INPUTS,
                                        output_names=["prefix"])
    finally:
        config._attn_implementation = previous
    tmp = path.with_suffix(".tmp.onnx")
    program.save(str(tmp))
    tmp.rename(path)
    return path


class PromptTooLongError(UsageError):
    """A prompt longer than the length an exported backbone graph was captured at."""


def pad_prompt(input_ids: torch.Tensor, attention_mask: torch.Tensor, length: int, pad_id: int,
               where: str = "the exported backbone"):
    """Right-pad ``[B, L]`` prompts to ``length``; a prompt with more real tokens is refused."""
    used = int(attention_mask.sum(1).max())
    if used > length:
        raise PromptTooLongError(f"{where}: the prompt has {used} tokens but the graph was captured at {length}; "
                                 f"shorten the instruction or re-export with a larger --instruction_tokens")
    ids = torch.full((input_ids.shape[0], length), pad_id, dtype=input_ids.dtype)
    out_mask = torch.zeros((input_ids.shape[0], length), dtype=attention_mask.dtype)
    keep = min(length, input_ids.shape[1])
    ids[:, :keep], out_mask[:, :keep] = input_ids[:, :keep], attention_mask[:, :keep]
    return ids, out_mask


class OnnxBackbone:
    """The exported backbone graphs of a policy directory (``backbone/<embodiment>.onnx`` and
    ``backbone/index.json``), run with onnxruntime; pads each prompt to its embodiment's captured length."""

    def __init__(self, directory: str | Path, backbone, pad_id: int, threads: int | None = None):
        import onnxruntime as ort
        directory = Path(directory)
        index = directory / "index.json"
        if not index.exists():
            raise FileNotFoundError(f"no exported backbone at '{directory}': run `vla-stack export --policy DIR --out DIR`")
        self.lengths = {name: entry["prompt_tokens"] for name, entry in json.loads(index.read_text()).items()}
        opts = session_options(threads)
        self.sessions = {name: ort.InferenceSession(str(directory / f"{name}.onnx"), opts,
                                                    providers=["CPUExecutionProvider"]) for name in self.lengths}
        self.backbone, self.pad_id = backbone, pad_id

    def __call__(self, batch: dict, embodiment: str) -> torch.Tensor:
        """``prefix [1, L, hidden]`` for a collated one-observation ``batch`` of prompt length L: the prompt is
        right-padded to the embodiment's captured length for the graph, and the padding cut off again, so the
        decoder reads the batch's own masks and no more tokens than in torch."""
        if embodiment not in self.lengths:
            raise UsageError(f"the exported backbone has no graph for embodiment '{embodiment}' (it has "
                             f"{sorted(self.lengths)}); re-export with it")
        ids, mask = pad_prompt(batch["input_ids"], batch["attention_mask"], self.lengths[embodiment], self.pad_id,
                               where=f"the exported backbone of '{embodiment}'")
        positions = rope_positions(self.backbone, ids, mask, batch["image_grid_thw"])
        feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "position_ids": positions.numpy(),
                "pixel_values": batch["pixel_values"].numpy().astype(np.float32)}
        prefix = self.sessions[embodiment].run(["prefix"], feed)[0]
        return torch.from_numpy(prefix[:, :batch["input_ids"].shape[1]])


def export_backbones(policy, names, directory: str | Path, instruction_tokens: int = 64, atol: float = 1e-4,
                     shown: str | Path | None = None) -> "OnnxBackbone":
    """Export ``policy``'s backbone for each embodiment in ``names`` into ``directory`` (``<name>.onnx`` and
    ``index.json``), each captured at its fixed prompt + ``instruction_tokens`` (rounded up to 32) and checked
    against torch on a synthetic observation; ``shown``: the directory named in the progress lines."""
    import time

    from components.synthetic import synthetic_observation
    directory, vla = Path(directory), policy.vla
    index, batches, pad_id = {}, {}, policy.processor.tokenizer.pad_token_id
    for name in names:
        fixed = len(policy.processor._prompt_ids(name, ""))
        length = -(-(fixed + instruction_tokens) // 32) * 32
        batches[name] = batch = policy.batch(synthetic_observation(policy.processor.embodiments[name]), name,
                                             "reach the red target")
        t0 = time.perf_counter()
        export_backbone(vla.backbone, batch, length, directory / f"{name}.onnx", pad_id)
        index[name] = {"prompt_tokens": length, "image_grid_thw": batch["image_grid_thw"].tolist()}
        print(f"wrote {Path(shown or directory) / (name + '.onnx')} (prompt {length} tokens, {fixed} fixed; "
              f"{time.perf_counter() - t0:.0f} s)", flush=True)
    (directory / "index.json").write_text(json.dumps(index, indent=2))
    graphs = OnnxBackbone(directory, vla.backbone, pad_id)
    for name, batch in batches.items():
        with torch.no_grad():
            want = vla.backbone(batch["input_ids"], batch["attention_mask"], batch["pixel_values"],
                                batch["image_grid_thw"])[0]
        real = batch["attention_mask"][0].bool()
        err = float((graphs(batch, name)[0][real] - want[real]).abs().max() / max(1.0, float(want.abs().max())))
        if err > atol:
            raise RuntimeError(f"exported backbone of '{name}' disagrees with torch: max |diff| {err:.2e} > {atol:g}; "
                               f"not kept")
        print(f"{name}: onnxruntime vs torch max |diff| = {err:.2e}", flush=True)
    return graphs
