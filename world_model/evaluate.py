"""Prediction error of a learned world model on held-out windows, per predicted step, against copying
the last context frame (docs/ARCHITECTURE.md, "World model"). ``vla-stack eval-world-model`` reports it."""
from __future__ import annotations

import numpy as np
import torch

from components.embodiment import EmbodimentSpec
from components.episode_store import EpisodeStore
from world_model.base import predicted_steps
from world_model.learned import LearnedWorldModel
from world_model.pipeline import pixels_to_uint8
from world_model.training import window, window_starts


def prediction_errors(model: LearnedWorldModel, store: EpisodeStore, spec: EmbodimentSpec, episodes: list[int],
                      stride: int = 5, batch_size: int = 16, seed: int = 0,
                      num_inference_steps: int | None = None, guidance_scale: float | None = None,
                      scorer=None, gamma: float | None = None) -> dict:
    """Mean squared errors per predicted step over the windows starting every ``stride`` frames of
    ``episodes``: pixels in [0, 1] (the model's imagined frames as ``imagine`` makes them, copy-the-last-frame,
    and the autoencoder's plain reconstruction of the target, for reference) and latents (the model's vs the
    encoded real target; copy-last: the encoded last context frame). ``shuffled``: the same windows imagined
    under another window's action chunk (the batch rolled by one), same noise: if the model used its
    actions, this error is higher. ``scorer`` (a :class:`~world_model.progress.ProgressScorer`): also its
    value of the last imagined frame, of the real frame there and of the last context frame, each against
    the real value label there (discounted dense reward, ``gamma``; needs the store's ``reward``)."""
    meta, pipe = model.meta, model.pipeline
    starts = window_starts(store, episodes, meta.execute_steps)[::stride]
    if not len(starts):
        return {"windows": 0}
    keys = ("pix_model", "pix_copy", "pix_recon", "pix_shuffled", "lat_model", "lat_copy", "lat_shuffled")
    sums = {k: np.zeros(meta.num_frames) for k in keys}
    shuffled_windows = 0
    values = {"imagined": [], "real": [], "copy_last": [], "label": []}
    labels = None
    if scorer is not None:
        from world_model.progress import returns
        labels = returns(store.lowdim("reward"), store.episode_ends, gamma)
    generator = torch.Generator().manual_seed(seed)
    for lo in range(0, len(starts), batch_size):
        samples = [window(store, int(t), meta, spec) for t in starts[lo:lo + batch_size]]
        batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
        pixels = batch["pixels"]  # [B, Fc + F, 3, H, W]
        b, n = pixels.shape[:2]
        latents = pipe.encode(pixels.flatten(0, 1)).unflatten(0, (b, n))
        context, target = latents[:, :meta.context_frames], latents[:, meta.context_frames:]
        last_real = pixels[:, meta.context_frames - 1]
        noise_state = generator.get_state()
        predicted, decoded = pipe(context, batch["actions"], batch["time_mask"], batch["dim_mask"],
                                  batch["embodiment"], num_inference_steps=num_inference_steps, generator=generator,
                                  last_pixels=last_real, guidance_scale=guidance_scale)
        recon = pipe.decode(target.flatten(0, 1)).unflatten(0, (b, -1))
        real = pixels[:, meta.context_frames:]

        def mse(a, b_):  # per predicted step, summed over the batch, on [0, 1] pixels or raw latents
            return ((a - b_) ** 2).flatten(2).mean(-1).sum(0).numpy()

        sums["pix_model"] += mse(decoded.clamp(-1, 1) / 2, real / 2)
        sums["pix_copy"] += mse(last_real[:, None].expand_as(real) / 2, real / 2)
        sums["pix_recon"] += mse(recon.clamp(-1, 1) / 2, real / 2)
        sums["lat_model"] += mse(predicted, target)
        sums["lat_copy"] += mse(latents[:, meta.context_frames - 1: meta.context_frames].expand_as(target), target)
        if scorer is not None:
            instruction = store.instructions[store.episode_of(int(starts[lo]))]
            for name, frames in (("imagined", decoded[:, -1]), ("real", real[:, -1]), ("copy_last", last_real)):
                values[name] += scorer.values(pixels_to_uint8(frames), instruction, spec).tolist()
            values["label"] += [float(labels[int(t) + meta.execute_steps]) for t in starts[lo:lo + batch_size]]
        if b > 1:  # the same windows and noise under the next window's chunk
            after = generator.get_state()
            generator.set_state(noise_state)
            roll = [torch.roll(batch[k], 1, 0) for k in ("actions", "time_mask", "dim_mask")]
            other, other_pixels = pipe(context, *roll, batch["embodiment"], num_inference_steps=num_inference_steps,
                                       generator=generator, last_pixels=last_real, guidance_scale=guidance_scale)
            generator.set_state(after)
            sums["pix_shuffled"] += mse(other_pixels.clamp(-1, 1) / 2, real / 2)
            sums["lat_shuffled"] += mse(other, target)
            shuffled_windows += b
    counts = {k: shuffled_windows if k.endswith("shuffled") else len(starts) for k in sums}
    mean = {k: (v / max(counts[k], 1)).round(6).tolist() for k, v in sums.items()}
    return {"windows": int(len(starts)), "steps": predicted_steps(meta.execute_steps, meta.num_frames),
            "pixel_mse": {"model": mean["pix_model"], "copy_last": mean["pix_copy"],
                          "autoencoder": mean["pix_recon"], "shuffled_actions": mean["pix_shuffled"]},
            "latent_mse": {"model": mean["lat_model"], "copy_last": mean["lat_copy"],
                           "shuffled_actions": mean["lat_shuffled"]},
            "shuffled_windows": shuffled_windows,
            **({"scorer_value": _value_errors(values)} if scorer is not None else {}),
            "beats_copy_last": {"pixel": [m < c for m, c in zip(mean["pix_model"], mean["pix_copy"])],
                                "latent": [m < c for m, c in zip(mean["lat_model"], mean["lat_copy"])]}}


def _value_errors(values: dict) -> dict:
    """MAE of each frame's value against the label, and its Pearson correlation with the label."""
    label = np.asarray(values["label"])
    out = {}
    for name in ("imagined", "real", "copy_last"):
        v = np.asarray(values[name])
        corr = float(np.corrcoef(v, label)[0, 1]) if len(v) > 1 and v.std() > 0 and label.std() > 0 else None
        out[name] = {"mae": round(float(np.abs(v - label).mean()), 6), "pearson": corr}
    return out
