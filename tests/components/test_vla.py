import pytest
import torch

from components.vla import VLA, flow_matching_loss, load_model_config

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


def test_flow_matching_loss_is_zero_for_the_true_velocity_and_one_for_zero_velocity():
    torch.manual_seed(3)
    actions = torch.randn(64, 10, 6)
    time_mask = torch.ones(64, 10, dtype=torch.bool)
    time_mask[:, 7:] = False
    dim_mask = torch.tensor([True] * 4 + [False] * 2).expand(64, 6)
    # x_t = t * noise + (1 - t) * a, so the true velocity noise - a equals (x_t - a) / t on the valid entries
    exact = flow_matching_loss(lambda x_t, t: (x_t - actions) / t[:, None, None], actions, time_mask, dim_mask)
    assert exact < 1e-8
    zeros = torch.zeros_like(actions)
    blind = flow_matching_loss(lambda x_t, t: torch.zeros_like(x_t), zeros, time_mask, dim_mask)
    assert 0.9 < blind < 1.1  # E[noise^2] over 64*7*4 valid entries


class CallCounter:
    def __init__(self, module, name):
        self.count = 0
        original = getattr(module, name)

        def counted(*args, **kwargs):
            self.count += 1
            return original(*args, **kwargs)
        setattr(module, name, counted)


def test_backbone_and_prefix_encoding_run_once_per_sampling_call(batch):
    torch.manual_seed(0)
    model = VLA(load_model_config("tiny"))
    backbone = CallCounter(model.backbone, "forward")
    cross = CallCounter(model.decoder, "encode_prefix")
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
    image = vla.image_mask(batch)
    assert not (image & ~mask).any()  # the image readout reads camera tokens, all inside the mask
    with torch.no_grad():
        out = [vla.decoder(x, t, batch["state"], batch["state_mask"], batch["dim_mask"],
                           *_encoded(vla.decoder, p, image, mask)) for p in (prefix, changed)]
    torch.testing.assert_close(out[0], out[1])


def _encoded(decoder, prefix, image_mask, mask):
    kv, cond = decoder.encode_prefix(prefix, image_mask)
    return kv, mask, None, cond


@pytest.fixture(scope="module")
def readout_vla():
    """The tiny VLA with its image readout switched on (a trained one: last layer not zero)."""
    torch.manual_seed(3)
    model = VLA(load_model_config("tiny")).eval()
    with torch.no_grad():  # the zero-initialized layers (adaLN, final, readout) as after training
        for p in model.decoder.parameters():
            if not p.any():
                p.normal_(std=0.05)
        model.decoder.readout[2].weight.normal_(std=0.2)
    return model


def test_image_readout_places_each_camera_token_in_its_own_slot(readout_vla, batch):
    dec, vla = readout_vla.decoder, readout_vla
    image = vla.image_mask(batch)
    assert vla.config.decoder.image_readout == 64 and int(image.sum(1).max()) <= 64
    prefix = torch.randn(len(image), image.shape[1], dec.cfg.prefix_dim)
    captured = {}
    hook = dec.readout.register_forward_hook(lambda m, args, out: captured.update(x=args[0]))
    _, cond = dec.encode_prefix(prefix, image)
    hook.remove()
    packed = captured["x"].view(len(image), dec.cfg.image_readout, dec.cfg.readout_dim)
    for i in range(len(image)):
        mine = dec.readout_proj(dec.prefix_proj(prefix[i][image[i]]))  # camera tokens in prompt order
        torch.testing.assert_close(packed[i, : len(mine)], mine)
        assert not packed[i, len(mine):].any()  # zero padding after the last camera token
    # swapping two camera tokens (same set, other places) changes the conditioning: position counts
    i = 0
    where = torch.nonzero(image[i]).flatten()
    swapped = prefix.clone()
    swapped[i, where[0]], swapped[i, where[1]] = prefix[i, where[1]], prefix[i, where[0]]
    _, cond2 = dec.encode_prefix(swapped, image)
    assert (cond2[i] - cond[i]).abs().max() > 1e-4
    torch.testing.assert_close(cond2[1:], cond[1:])


def test_image_readout_conditions_every_candidate_and_sampling_paths_agree(readout_vla, batch):
    noise = torch.randn(4, 3, 8, 32, generator=torch.Generator().manual_seed(0))
    cached = readout_vla.sample(batch, 8, 3, 6, noise=noise)
    uncached = readout_vla.sample(batch, 8, 3, 6, noise=noise, cache=False)
    torch.testing.assert_close(cached, uncached, atol=1e-5, rtol=1e-5)
    # the readout reaches every candidate of every observation: zeroing it changes each of them
    w = readout_vla.decoder.readout[2].weight
    saved = w.detach().clone()
    with torch.no_grad():
        w.zero_()
    try:
        without = readout_vla.sample(batch, 8, 3, 6, noise=noise)
    finally:
        with torch.no_grad():
            w.copy_(saved)
    assert ((cached - without).abs().amax(dim=(2, 3)) > 1e-4).all()


def test_more_camera_tokens_than_the_readout_reads_is_a_clear_error(readout_vla, batch):
    too_many = {**batch, "input_ids": torch.full_like(batch["input_ids"], readout_vla.backbone.image_token_id)}
    with pytest.raises(ValueError, match=r"camera tokens but the decoder's image readout reads 64"):
        readout_vla.image_mask(too_many)


def test_configs_written_before_decoder_reads_existed_read_everything():
    from components.vla import VLAConfig, load_model_config

    raw = load_model_config("tiny").to_dict()
    raw.pop("decoder_reads")
    assert VLAConfig.from_dict(raw).decoder_reads == "all"
    with pytest.raises(ValueError, match="decoder_reads must be 'user_turn' or 'all', got 'images'"):
        VLAConfig.from_dict({**raw, "decoder_reads": "images"})
