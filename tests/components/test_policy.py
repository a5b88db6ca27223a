import json
import shutil

import numpy as np
import pytest

from components.policy import ObservationError, Policy


def observation(policy, name):
    spec = policy.processor.embodiments[name]
    rng = np.random.default_rng(0)
    return {"images": {c.name: rng.integers(0, 255, (c.height, c.width, 3), dtype=np.uint8) for c in spec.cameras},
            "state": np.array([(s.low + s.high) / 2 for s in spec.state_slots], np.float32)}


def test_one_set_of_weights_serves_every_embodiment(policy):
    assert sorted(policy.embodiments) == ["aloha", "fetch", "video", "wheeled"]
    for name, (h, a) in {"aloha": (50, 14), "fetch": (10, 4), "wheeled": (8, 4), "video": (8, 4)}.items():
        chunks = policy.sample(observation(policy, name), name, "reach the red target", num_samples=3, seed=0)
        assert chunks.shape == (3, h, a) and chunks.dtype == np.float32
        assert np.isfinite(chunks).all()


def test_sampling_is_reproducible_with_a_seed(policy):
    obs = observation(policy, "fetch")
    a = policy.sample(obs, "fetch", "reach", num_samples=2, seed=3)
    b = policy.sample(obs, "fetch", "reach", num_samples=2, seed=3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a[0], a[1])


@pytest.mark.parametrize("mutate, message", [
    (lambda o: o["images"].pop("top"), r"missing camera 'top' \(cameras given: \[\]; the spec needs \['top'\]\)"),
    (lambda o: o["images"].update(top=np.zeros((240, 320, 3), np.float32)),
     r"camera 'top' image has dtype float32, expected uint8"),
    (lambda o: o["images"].update(top=np.zeros((480, 640, 3), np.uint8)),
     r"camera 'top' image has shape \(480, 640, 3\), expected \(240, 320, 3\) as declared in"),
    (lambda o: o["state"].__setitem__(3, np.nan), r"'state' has NaN/inf in slot\(s\) \['left_forearm_roll'\]"),
    (lambda o: o.__setitem__("state", np.zeros(7)), r"'state' has shape \(7,\), expected \(14,\)"),
    (lambda o: o.pop("state"), r"missing 'state' \(14 values"),
])
def test_bad_observation_is_rejected_before_the_model_runs(policy, mutate, message):
    obs = observation(policy, "aloha")
    mutate(obs)
    calls = []
    original = policy.vla.backbone.forward
    policy.vla.backbone.forward = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        with pytest.raises(ObservationError, match=r"observation for embodiment 'aloha': " + message):
            policy.sample(obs, "aloha", "transfer the cube")
    finally:
        del policy.vla.backbone.forward
    assert not calls


def test_unknown_embodiment_is_a_clear_error(policy):
    with pytest.raises(ValueError, match="unknown embodiment 'spot'; this model knows"):
        policy.sample(observation(policy, "fetch"), "spot", "reach")


def test_checkpoint_directory_has_the_documented_layout(tiny_checkpoint):
    from pathlib import Path
    names = {p.name for p in Path(tiny_checkpoint).iterdir()}
    assert {"config.json", "model.safetensors", "embodiments.yaml", "norm_stats.json", "tokenizer"} <= names
    assert len(json.loads((Path(tiny_checkpoint) / "config.json").read_text())["norm_stats_sha256"]) == 64


def test_tampered_norm_stats_are_refused_on_load(tiny_checkpoint, tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, copy)
    stats = json.loads((copy / "norm_stats.json").read_text())
    stats["fetch"]["action"]["q99"][14] += 0.5
    (copy / "norm_stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    with pytest.raises(ValueError, match="norm_stats.json was modified or belongs to another checkpoint"):
        Policy.from_pretrained(copy)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a VLA checkpoint directory: no config.json"):
        Policy.from_pretrained(tmp_path)


def _policy_with_scaled_output(tiny_checkpoint, scale=None, bias=None):
    """A fresh copy of the tiny policy whose decoder output layer is random and scaled (a diverged model;
    the DiT's output layer starts at zero) or NaN."""
    import torch
    pol = Policy.from_pretrained(tiny_checkpoint)
    with torch.no_grad():
        if scale is not None:
            torch.manual_seed(0)
            pol.vla.decoder.final.weight.normal_().mul_(scale)
            pol.vla.decoder.final.bias.normal_().mul_(scale)
        if bias is not None:
            pol.vla.decoder.final.bias.fill_(bias)
    return pol


def test_a_decoder_scaled_by_1e6_still_returns_only_in_range_actions_for_every_embodiment(tiny_checkpoint):
    pol = _policy_with_scaled_output(tiny_checkpoint, scale=1e6)
    for name in pol.embodiments:
        spec = pol.processor.embodiments[name]
        out = pol.sample_limited(observation(pol, name), name, "reach", num_samples=2, seed=0)
        lows = np.array([s.low for s in spec.action_slots])
        highs = np.array([s.high for s in spec.action_slots])
        assert np.isfinite(out.chunks).all() and (out.chunks >= lows).all() and (out.chunks <= highs).all()
        assert out.clipped > out.chunks.size // 2 and out.nonfinite == 0  # the raw output was far outside
        assert np.array_equal(out.chunks, pol.sample(observation(pol, name), name, "reach", num_samples=2, seed=0))


def test_a_non_finite_output_becomes_the_safe_action_where_the_spec_names_one(tiny_checkpoint):
    from components.embodiment import ActionLimitError
    pol = _policy_with_scaled_output(tiny_checkpoint, bias=float("nan"))
    wheeled = pol.processor.embodiments["wheeled"]
    out = pol.sample_limited(observation(pol, "wheeled"), "wheeled", "go", num_samples=1, seed=0)
    assert out.nonfinite == out.chunks.size
    assert (out.chunks == np.asarray(wheeled.safe_action, np.float32)).all()  # every waypoint at the robot: stop
    with pytest.raises(ActionLimitError, match=r"non-finite action value\(s\) for embodiment 'fetch' .* no safe_action"):
        pol.sample(observation(pol, "fetch"), "fetch", "reach", seed=0)


def test_the_run_result_counts_the_clipped_actions(tiny_checkpoint, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from stack.runner import run
    ckpt = tmp_path / "diverged"
    shutil.copytree(tiny_checkpoint, ckpt)
    weights = load_file(ckpt / "model.safetensors")
    torch.manual_seed(0)
    for key in ("decoder.final.weight", "decoder.final.bias"):
        weights[key] = torch.randn_like(weights[key]) * 1e6
    save_file({k: v.contiguous() for k, v in weights.items()}, ckpt / "model.safetensors")
    assert torch.is_tensor(weights["decoder.final.weight"])
    result = run("vla_stack/WheeledHallway-v0", str(ckpt), episodes=1, max_steps=6, num_flow_steps=2)
    ep = result["per_episode"][0]
    assert result["clipped_actions"] == ep["clipped_actions"] > 0 and result["nonfinite_actions"] == 0


def test_sample_batch_gives_each_request_its_own_sample_limited_chunk(policy):
    """Mixed embodiments and instructions of different lengths in one call: per request the chunk
    sample_limited gives for the same seed (one backbone + decoder call per chunk horizon)."""
    requests = [(observation(policy, "fetch"), "fetch", "reach"),
                (observation(policy, "aloha"), "aloha", "transfer the cube to the other arm"),
                (observation(policy, "fetch"), "fetch", "reach the red target far to the left"),
                (observation(policy, "wheeled"), "wheeled", "go")]
    seeds = [1, 2, 3, 4]
    calls = []
    original = policy.vla.sample
    policy.vla.sample = lambda batch, *a, **k: calls.append(batch["input_ids"].shape[0]) or original(batch, *a, **k)
    try:
        batched = policy.sample_batch(requests, seeds)
    finally:
        del policy.vla.sample
    assert sorted(calls) == [1, 1, 2]  # fetch's two requests share one call
    for (obs, name, text), seed, got in zip(requests, seeds, batched):
        alone = policy.sample_limited(obs, name, text, seed=seed)
        assert got.chunks.shape == alone.chunks.shape
        np.testing.assert_allclose(got.chunks, alone.chunks, rtol=0, atol=1e-5)
        assert (got.clipped, got.nonfinite) == (alone.clipped, alone.nonfinite)
    with pytest.raises(ObservationError, match="missing camera"):
        policy.sample_batch([(observation(policy, "fetch"), "aloha", "x")], [0])
