import lightning as L
import pytest
import torch

from components.datamodule import DatasetEntry, MixtureDataModule
from components.training import VLAModule


class LossLog(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def train(stores, steps, batch_size):
    torch.manual_seed(0)
    dm = MixtureDataModule([DatasetEntry(stores["fetch"]), DatasetEntry(stores["wheeled"])],
                           batch_size=batch_size, num_workers=0, samples_per_epoch=10_000)
    log = LossLog()
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, limit_val_batches=0, callbacks=[log])
    trainer.fit(VLAModule(lr=1e-3, warmup_steps=5), dm)
    return log.losses


def test_joint_training_on_two_embodiments_reduces_the_loss(synthetic_stores):
    losses = train(synthetic_stores, steps=40, batch_size=8)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first, losses


@pytest.mark.slow
def test_tiny_vla_overfits_two_embodiments(synthetic_stores):
    """The acceptance check of the VLA-core issue (minutes on two cores); the test above covers the
    same behaviour quickly."""
    losses = train(synthetic_stores, steps=400, batch_size=16)
    assert sum(losses[-10:]) / 10 <= 0.1 * sum(losses[:5]) / 5, losses


def test_init_from_copies_the_weights_and_refuses_another_architecture(tmp_path):
    from components.training import VLAModule
    from components.vla import VLA, load_model_config

    source = VLA(load_model_config("tiny"))
    source.save_pretrained(tmp_path / "ckpt")
    module = VLAModule(model="tiny", init_from=str(tmp_path / "ckpt"))
    for (name, a), b in zip(source.state_dict().items(), module.vla.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="does not fit the configured model: .*other shape"):
        VLAModule(model="tiny", overrides={"decoder": {"hidden": 96}}, init_from=str(tmp_path / "ckpt"))
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        VLAModule(model="tiny", init_from=str(tmp_path))


def test_init_from_a_checkpoint_without_image_readout_adds_it(tmp_path):
    """A checkpoint written before the image readout existed fine-tunes into a model with one."""
    from components.training import VLAModule
    from components.vla import VLA, load_model_config

    torch.manual_seed(0)
    source = VLA(load_model_config("tiny", {"decoder": {"image_readout": 0}}))
    source.save_pretrained(tmp_path / "old")
    module = VLAModule(model="tiny", init_from=str(tmp_path / "old"))
    assert module.vla.config.decoder.image_readout > 0
    src, own = source.state_dict(), module.vla.state_dict()
    new = sorted(set(own) - set(src))
    assert new and all(k.startswith(("decoder.readout_proj.", "decoder.readout.")) for k in new)
    for name, value in src.items():
        assert torch.equal(own[name], value), name
    # other missing tensors are still an error
    with pytest.raises(ValueError, match="does not fit the configured model: unexpected"):
        module2 = VLA(load_model_config("tiny"))
        module2.save_pretrained(tmp_path / "new")
        VLAModule(model="tiny", overrides={"decoder": {"image_readout": 0}}, init_from=str(tmp_path / "new"))


def test_init_parts_and_freeze_backbone_train_a_fresh_decoder_on_a_loaded_backbone(tmp_path, datamodule):
    """Stage 4 of the shipped generalist: stage 3's backbone, frozen, under a fresh decoder."""
    from components.training import VLAModule
    from components.vla import VLA, load_model_config

    torch.manual_seed(0)
    source = VLA(load_model_config("tiny"))
    source.save_pretrained(tmp_path / "ckpt")
    torch.manual_seed(1)
    module = VLAModule(model="tiny", init_from=str(tmp_path / "ckpt"), init_parts=["backbone"],
                       freeze_backbone=True, lr=1e-3)
    src = source.state_dict()
    for name, value in module.vla.state_dict().items():
        if name.startswith("backbone."):
            assert torch.equal(value, src[name]), name
    assert not all(torch.equal(v, src["decoder." + k]) for k, v in module.vla.decoder.state_dict().items()
                   if k.startswith("blocks.0.self_attn"))  # the decoder is not the checkpoint's
    # one optimizer step moves the decoder and leaves the backbone as loaded
    ds = datamodule.train_set
    batch = datamodule.processor.collate([ds[int(o)] for o in ds.offsets[:-1]])
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-3)
    before = {k: v.clone() for k, v in module.vla.state_dict().items()}
    module.vla.loss(batch).backward()
    opt.step()
    after = module.vla.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before if k.startswith("backbone."))
    assert any(not torch.equal(after[k], before[k]) for k in before if k.startswith("decoder."))
    with pytest.raises(ValueError, match=r"init_parts \['head'\]: expected a non-empty subset of \['backbone', 'decoder'\]"):
        VLAModule(model="tiny", init_from=str(tmp_path / "ckpt"), init_parts=["head"])
    with pytest.raises(ValueError, match="init_parts names parts of the init_from checkpoint"):
        VLAModule(model="tiny", init_parts=["backbone"])
