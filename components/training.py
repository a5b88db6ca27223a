"""The Lightning module: the VLA, its training step, and the checkpoint directory it exports."""
from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from components.checkpoint_io import reading, replace_directory
from components.errors import CheckpointNotFoundError, ConfigError
from components.processor import VLAProcessor
from components.vla import VLA, load_model_config


def export_pretrained(vla: VLA, processor: VLAProcessor, directory: str | Path) -> Path:
    """Write the HF-style checkpoint directory atomically: a reader sees the old one or the new one,
    never half of one."""
    directory = Path(directory)
    with replace_directory(directory) as tmp:
        digest = processor.save(tmp)
        vla.save_pretrained(tmp, extra={"norm_stats_sha256": digest})
    return directory


ADDABLE = ("decoder.readout_proj.", "decoder.readout.", "decoder.slot_adapter.", "decoder.motion_adapter.",
           "decoder.motion_history.")  # modules init_from may add


PARTS = ("backbone", "decoder")


def load_weights(vla: VLA, directory: str | Path, parts: list[str] | tuple[str, ...] = PARTS) -> None:
    """Copy the weights of checkpoint directory ``directory`` into ``vla`` (same architecture, except
    that a decoder image readout the checkpoint lacks keeps its fresh initialization). ``parts``: which of
    ``backbone``/``decoder`` to copy; the others keep their fresh initialization."""
    bad = sorted(set(parts) - set(PARTS))
    if bad or not parts:
        raise ConfigError(f"init_parts {list(parts)}: expected a non-empty subset of {list(PARTS)}")
    from safetensors.torch import load_file

    path = Path(directory) / "model.safetensors"
    if not path.exists():
        raise CheckpointNotFoundError(f"init_from '{directory}': no model.safetensors there; expected a "
                                      f"checkpoint directory written by vla-stack fit (config.json, "
                                      f"model.safetensors, ...)")
    keep = tuple(f"{part}." for part in parts)
    with reading(path, "the weights of init_from"):
        state = {k: v for k, v in load_file(str(path)).items() if k.startswith(keep)}
    own = {k: v for k, v in vla.state_dict().items() if k.startswith(keep)}
    fresh = sorted(k for k in set(own) - set(state) if k.startswith(ADDABLE))
    missing = sorted(set(own) - set(state) - set(fresh))
    unexpected = sorted(set(state) - set(own))
    reshaped = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or reshaped:
        detail = "; ".join(f"{what}: {keys[:3]}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
                           for what, keys in (("missing", missing), ("unexpected", unexpected),
                                              ("other shape", [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                                                               for k in reshaped])) if keys)
        raise ConfigError(f"init_from '{directory}' does not fit the configured model: {detail}. "
                          f"Use the model config it was trained with (its config.json).")
    vla.load_state_dict(state, strict=False)  # every key of the chosen parts was checked above
    if fresh:
        rank_zero_info(f"init_from {directory}: {len(fresh)} tensors (image readout, slot adapter) are new (not in "
                       f"the checkpoint) and start from their initialization: {', '.join(fresh)}")



def adamw_warmup_cosine(module, params) -> dict:
    """AdamW with ``module.hparams`` lr / weight_decay, a linear warm-up over ``warmup_steps`` and a cosine
    decay to 10 % of lr by the last step: the optimizer config of every Lightning module here."""
    hp = module.hparams
    opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
    total = max(1, module.trainer.estimated_stepping_batches)
    warm = min(hp.warmup_steps, total // 2)

    def schedule(step):
        if step < warm:
            return (step + 1) / (warm + 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, schedule),
                                               "interval": "step"}}

class ExportsOnCheckpoint:
    """Mixin of the Lightning modules here: AdamW (:func:`adamw_warmup_cosine`), and the exported directory
    (``_export() -> Path | None``) kept in step with every Lightning checkpoint and written when fitting ends."""
    exported = "checkpoint directory"

    def configure_optimizers(self):
        return adamw_warmup_cosine(self, [p for p in self.parameters() if p.requires_grad])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self._export()

    def on_train_end(self) -> None:
        path = self._export()
        if path:
            print(f"{self.exported} written: {path}")


class VLAModule(ExportsOnCheckpoint, L.LightningModule):
    """``model``: a preset under configs/model (tiny, full) or a YAML path; ``overrides`` patch it.
    ``export_dir``: where the checkpoint directory (docs/ARCHITECTURE.md) is written when fitting ends.
    ``init_from``: a checkpoint directory whose weights start the run (fine-tuning); its model
    must have the same architecture. Normalization stats come from the new data, not from it.
    ``init_parts``: which parts it gives (``backbone``, ``decoder``; default both), e.g. a fresh
    decoder on a trained backbone. ``freeze_backbone``: train the decoder only (the backbone's
    weights stay as loaded; no gradient flows into it, so steps are cheaper).
    ``train_only``: train only the parameters under these prefixes of the model (e.g.
    ``decoder.slot_adapter``); every other weight stays as loaded. With the slot adapter alone, an
    embodiment whose state lacks the adapter's slots gives the same actions bit for bit (adding a
    state input, e.g. a subgoal, to a trained generalist: components/dit.py).
    (Resuming an interrupted run is ``--ckpt_path last``, which restores optimizer and step too.)"""

    def __init__(self, model: str = "tiny", overrides: dict | None = None, lr: float = 3e-4,
                 weight_decay: float = 0.01, warmup_steps: int = 20, export_dir: str | None = None,
                 init_from: str | None = None, init_parts: list[str] | None = None,
                 freeze_backbone: bool = False, train_only: list[str] | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.vla = VLA(load_model_config(model, overrides))
        if init_parts is not None and not init_from:
            raise ConfigError("init_parts names parts of the init_from checkpoint, but init_from is not set")
        if init_from:
            load_weights(self.vla, init_from, PARTS if init_parts is None else init_parts)
        if freeze_backbone:
            self.vla.backbone.requires_grad_(False)
        if train_only:
            prefixes = tuple(p.rstrip(".") + "." for p in train_only)
            names = [n for n, _ in self.vla.named_parameters() if n.startswith(prefixes)]
            if not names:
                raise ConfigError(f"model.train_only {list(train_only)}: no parameter of the model starts with "
                                  f"these (top-level modules: {sorted({n.split('.')[0] for n, _ in self.vla.named_parameters()})}; "
                                  f"e.g. decoder.slot_adapter needs model.overrides.decoder.slot_adapter)")
            for n, p in self.vla.named_parameters():
                p.requires_grad_(n.startswith(prefixes))
        self.processor: VLAProcessor | None = None

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and datamodule.processor is not None:
            self.processor = datamodule.processor

    def _logged_loss(self, stage: str, batch, **kwargs) -> torch.Tensor:
        """The loss, logged as ``<stage>/loss``, and each of its terms when it has several."""
        terms = self.vla.loss_terms(batch)
        loss = sum(terms.values())
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=len(batch["input_ids"]), **kwargs)
        if len(terms) > 1:
            for name, value in terms.items():
                self.log(f"{stage}/{name}_loss", value, batch_size=len(batch["input_ids"]), **kwargs)
        return loss

    def training_step(self, batch, batch_idx):
        return self._logged_loss("train", batch)

    def validation_step(self, batch, batch_idx):
        self._logged_loss("val", batch, sync_dist=True)

    def test_step(self, batch, batch_idx):
        self.log("test/loss", self.vla.loss(batch), batch_size=len(batch["input_ids"]), sync_dist=True)

    def predict_step(self, batch, batch_idx):
        """Sampled chunks in robot units, with the mean absolute error to the recorded ones."""
        horizon = batch["actions"].shape[1]
        chunks = self.vla.sample(batch, horizon=horizon)[:, 0]
        out = []
        for i, name in enumerate(batch["embodiment"]):
            valid = batch["time_mask"][i].cpu().numpy()
            pred = self.processor.decode_actions(chunks[i], name)[valid]
            true = self.processor.decode_actions(batch["actions"][i], name)[valid]
            out.append({"embodiment": name, "instruction": batch["instruction"][i] if "instruction" in batch else None,
                        "predicted": pred, "recorded": true, "mae": float(abs(pred - true).mean())})
        return out

    def _export(self):
        if self.hparams.export_dir and self.processor is not None and self.trainer.is_global_zero:
            return export_pretrained(self.vla, self.processor, self.hparams.export_dir)
        return None
