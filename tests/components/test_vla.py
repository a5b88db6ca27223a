import pytest
import torch

from components.vla import VLA, load_model_config

# Published sizes: Qwen3.5-4B(-Base) is listed at 4.5B parameters; the Qwen-VLA paper's DiT at 1.15B.
PUBLISHED_BACKBONE = 4.5e9
PUBLISHED_DECODER = 1.15e9


@pytest.fixture(scope="module")
def vla():
    torch.manual_seed(0)
    return VLA(load_model_config("tiny"))


@pytest.fixture(scope="module")
def batch(datamodule):
    ds = datamodule.train_set
    # one sample of each embodiment: mixed horizons, widths and prompts in one batch
    firsts = [int(o) for o in ds.offsets[:-1]]
    return datamodule.processor.collate([ds[i] for i in firsts])


def count_params(module):
    return sum(p.numel() for p in module.parameters())


def test_full_config_matches_published_sizes_on_meta_device():
    with torch.device("meta"):
        full = VLA(load_model_config("full"))
    backbone, decoder = count_params(full.backbone), count_params(full.decoder)
    assert next(full.parameters()).device.type == "meta"
    assert abs(backbone / PUBLISHED_BACKBONE - 1) < 0.05, backbone
    assert abs(decoder / PUBLISHED_DECODER - 1) < 0.05, decoder


def test_tiny_config_is_small_enough_for_two_cores(vla):
    assert count_params(vla.backbone) < 2e6
    assert count_params(vla.decoder) < 6e6


def test_padded_dimensions_get_zero_gradient(vla, batch):
    actions = batch["actions"].clone().requires_grad_(True)
    torch.manual_seed(1)
    loss = vla.loss({**batch, "actions": actions})
    loss.backward()
    valid = batch["time_mask"][:, :, None] & batch["dim_mask"][:, None, :]
    assert actions.grad[~valid].abs().max() == 0
    assert actions.grad[valid].abs().max() > 0


def test_loss_ignores_values_in_padding(vla, batch):
    valid = batch["time_mask"][:, :, None] & batch["dim_mask"][:, None, :]
    garbage = batch["actions"].masked_fill(~valid, 1e4)
    torch.manual_seed(2)
    a = vla.loss(batch)
    torch.manual_seed(2)
    b = vla.loss({**batch, "actions": garbage})
    assert torch.allclose(a, b)


class CallCounter:
    def __init__(self, module, name):
        self.count = 0
        original = getattr(module, name)

        def counted(*args, **kwargs):
            self.count += 1
            return original(*args, **kwargs)
        setattr(module, name, counted)


def test_backbone_and_cross_kv_run_once_per_sampling_call(batch):
    torch.manual_seed(0)
    model = VLA(load_model_config("tiny"))
    backbone = CallCounter(model.backbone, "forward")
    cross = CallCounter(model.decoder, "cross_kv")
    out = model.sample(batch, horizon=8, num_samples=5, num_steps=10)
    assert out.shape == (4, 5, 8, 32)
    assert backbone.count == 1 and cross.count == 1
    model.sample(batch, horizon=8, num_samples=5, num_steps=10, cache=False)
    assert backbone.count == 1 + 10 and cross.count == 1 + 10


def test_cached_and_uncached_sampling_agree(vla, batch):
    noise = torch.randn(4, 3, 8, 32, generator=torch.Generator().manual_seed(0))
    cached = vla.sample(batch, 8, 3, 6, noise=noise)
    uncached = vla.sample(batch, 8, 3, 6, noise=noise, cache=False)
    assert torch.allclose(cached, uncached, atol=1e-5)
    assert not cached[~batch["dim_mask"][:, None, None, :].expand_as(cached)].any()


def test_unknown_model_config_lists_presets():
    with pytest.raises(FileNotFoundError, match=r"model config 'huge' not found: expected one of \['full', 'tiny'\]"):
        load_model_config("huge")


def test_decoder_reads_the_user_turn_only(vla, batch):
    assert vla.config.decoder_reads == "user_turn"  # configs/model/tiny.yaml
    mask, attn, ids = vla.decoder_mask(batch), batch["attention_mask"].bool(), batch["input_ids"]
    for i in range(len(ids)):
        valid = torch.nonzero(attn[i]).flatten()
        on = torch.nonzero(mask[i]).flatten()
        assert on[-1] == valid[-1] and 0 < on[0] < len(valid)  # up to the prompt's end, not the start
        assert bool(mask[i, on[0]:valid[-1] + 1].all())
        assert int((ids[i][mask[i]] == vla.backbone.image_token_id).sum()) == int(
            (ids[i][attn[i]] == vla.backbone.image_token_id).sum())  # every camera token is read
    # what the decoder computes does not depend on backbone outputs outside the mask
    prefix = vla.backbone(ids, batch["attention_mask"], batch["pixel_values"], batch["image_grid_thw"])
    changed = prefix.clone()
    changed[~mask] += 5.0
    x = torch.randn(len(ids), 4, vla.config.decoder.action_dim)
    t = torch.full((len(ids),), 0.5)
    with torch.no_grad():
        out = [vla.decoder(x, t, batch["state"], batch["state_mask"], batch["dim_mask"],
                           vla.decoder.cross_kv(p), mask) for p in (prefix, changed)]
    torch.testing.assert_close(out[0], out[1])


def test_configs_written_before_decoder_reads_existed_read_everything():
    from components.vla import VLAConfig, load_model_config

    raw = load_model_config("tiny").to_dict()
    raw.pop("decoder_reads")
    assert VLAConfig.from_dict(raw).decoder_reads == "all"
    with pytest.raises(ValueError, match="decoder_reads must be 'user_turn' or 'all', got 'images'"):
        VLAConfig.from_dict({**raw, "decoder_reads": "images"})
