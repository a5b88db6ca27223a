import json

import numpy as np
import pytest
import torch

from components.normalization import (
    NormStats,
    compute_stats,
    load_stats,
    save_stats,
    stats_digest,
)

MASK = np.array([True, True, False, True, False])


def sample_values(n: int = 2000) -> np.ndarray:
    """values [n, 5]: dims 2 and 4 are padding filled with huge numbers."""
    rng = np.random.default_rng(0)
    loc, scale = [0.0, 3.0, 0.0, -2.0, 0.0], [1.0, 0.5, 1.0, 4.0, 1.0]
    values = rng.normal(loc=loc, scale=scale, size=(n, 5))
    values[:, 2] = 1e30
    values[:, 4] = -1e12
    return values


def test_normalize_then_unnormalize_is_identity_on_masked_in_dims():
    values = sample_values()
    stats = compute_stats(values, MASK)
    y = stats.normalize(values)
    assert y.shape == values.shape
    back = stats.unnormalize(y)
    np.testing.assert_allclose(back[:, MASK], values[:, MASK], rtol=1e-10, atol=1e-10)
    # q01..q99 land on -1..1
    np.testing.assert_allclose(stats.normalize(stats.q01)[MASK], -1.0)
    np.testing.assert_allclose(stats.normalize(stats.q99)[MASK], 1.0)


def test_masked_out_dims_become_zero_and_never_enter_the_quantiles():
    values = sample_values()
    stats = compute_stats(values, MASK)
    np.testing.assert_array_equal(stats.q01[~MASK], -1.0)
    np.testing.assert_array_equal(stats.q99[~MASK], 1.0)
    assert np.all(np.abs(stats.q99[MASK]) < 100)  # the huge padding did not leak in
    reference = compute_stats(values[:, MASK], np.ones(MASK.sum(), dtype=bool))
    np.testing.assert_allclose(stats.q01[MASK], reference.q01)
    np.testing.assert_allclose(stats.q99[MASK], reference.q99)

    y = stats.normalize(values)
    np.testing.assert_array_equal(y[:, ~MASK], 0.0)
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(stats.unnormalize(y)[:, ~MASK], 0.0)
    assert stats.count == len(values)


def test_constant_dim_gets_finite_normalization():
    values = sample_values()
    values[:, 0] = 0.25
    stats = compute_stats(values, MASK, floor=1e-2)
    assert stats.q99[0] - stats.q01[0] == pytest.approx(1e-2)
    assert (stats.q01[0] + stats.q99[0]) / 2 == pytest.approx(0.25)
    y = stats.normalize(values)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y[:, 0], 0.0, atol=1e-12)
    np.testing.assert_allclose(stats.unnormalize(y)[:, 0], 0.25)


def test_torch_and_numpy_paths_agree():
    values = sample_values(500).astype(np.float32)
    stats = compute_stats(values, MASK)
    chunks = values.reshape(50, 10, 5)  # [..., D] with extra leading dims
    y_np = stats.normalize(chunks)
    y_torch = stats.normalize(torch.from_numpy(chunks))
    assert isinstance(y_torch, torch.Tensor) and y_torch.dtype == torch.float32
    assert y_np.dtype == np.float32
    np.testing.assert_allclose(y_torch.numpy(), y_np, rtol=1e-6, atol=1e-6)
    back = stats.unnormalize(y_torch)
    assert isinstance(back, torch.Tensor)
    np.testing.assert_allclose(back.numpy(), stats.unnormalize(y_np), rtol=1e-6, atol=1e-5)


def test_wrong_width_is_rejected():
    stats = compute_stats(sample_values(), MASK)
    with pytest.raises(ValueError, match=r"\[\.\.\., 5\]"):
        stats.normalize(np.zeros((3, 4)))


def test_save_and_load_round_trip_with_digest(tmp_path):
    values = sample_values()
    stats = {
        "aloha": {
            "action": compute_stats(values, MASK),
            "state": compute_stats(values[:, :3], MASK[:3]),
        },
        "fetch": {
            "action": compute_stats(values[:, :2], MASK[:2]),
            "state": compute_stats(values, MASK),
        },
    }
    path = tmp_path / "norm_stats.json"
    digest = save_stats(path, stats)
    text = path.read_text()
    assert digest == stats_digest(text)
    assert list(json.loads(text)) == ["aloha", "fetch"]

    loaded = load_stats(path, expected_sha256=digest)
    for name, by_key in stats.items():
        for key, s in by_key.items():
            got = loaded[name][key]
            np.testing.assert_array_equal(got.q01, s.q01)
            np.testing.assert_array_equal(got.q99, s.q99)
            np.testing.assert_array_equal(got.mask, s.mask)
            assert got.count == s.count
    assert save_stats(tmp_path / "again.json", loaded) == digest


def test_digest_mismatch_names_file_and_both_digests(tmp_path):
    path = tmp_path / "norm_stats.json"
    digest = save_stats(path, {"aloha": {"action": compute_stats(sample_values(), MASK)}})
    path.write_text(path.read_text().replace('"count": 2000', '"count": 2001'))
    actual = stats_digest(path.read_text())
    with pytest.raises(ValueError) as err:
        load_stats(path, expected_sha256=digest)
    message = str(err.value)
    assert str(path) in message and digest in message and actual in message
    assert "norm_stats.json was modified or belongs to another checkpoint" in message


def test_stats_with_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="one shape"):
        NormStats(q01=np.zeros(3), q99=np.ones(4), mask=np.ones(3, dtype=bool), count=1)


def test_unreadable_stats_file_is_a_checkpoint_error_naming_it(tmp_path):
    from components.errors import CheckpointError, CheckpointNotFoundError
    path = tmp_path / "norm_stats.json"
    with pytest.raises(CheckpointNotFoundError, match="norm_stats.json: no normalization statistics file"):
        load_stats(path)
    path.write_text('{"fetch": {"action": ')
    with pytest.raises(CheckpointError, match=r"norm_stats.json: not a normalization statistics file \(JSONDecodeError"):
        load_stats(path)
    path.write_text('{"fetch": {"action": {"q01": [0.0], "q99": [1.0], "mask": [true]}}}')
    with pytest.raises(CheckpointError, match="norm_stats.json: not a normalization statistics file .*no field 'count'"):
        load_stats(path)
