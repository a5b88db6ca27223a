"""`vla-stack bench latency`: times a model config (random weights) in float32 or bfloat16."""
import json

import pytest
import torch

from stack.bench import bench_latency


def test_latency_of_the_tiny_config_in_bfloat16_is_written_and_consistent(tmp_path):
    out = tmp_path / "latency.json"
    result = bench_latency(model="tiny", embodiment="fetch", dtype="bfloat16", candidates=[1, 2], num_steps=3,
                           repeats=2, threads=1, json=str(out))
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    rows = result["p50_ms"]
    assert set(rows) == {"backbone B (prefix: backbone + cross K/V)", "decoder step D (K=1)",
                         "chunk K=1 N=3 cached", "chunk K=2 N=3 cached", "chunk K=1 N=3 uncached"}
    assert all(v > 0 for v in rows.values())
    assert result["horizon"] == 10 and result["dtype"] == "bfloat16" and not result["special_token_ids_remapped"]
    # the tiny config's backbone and decoder sizes (docs/RESULTS.md "Model sizes")
    assert 0.5e6 < result["backbone_parameters"] < 2e6 and 3e6 < result["decoder_parameters"] < 6e6


def test_bfloat16_model_samples_bfloat16_chunks():
    from components.vla import VLA, load_model_config

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        vla = VLA(load_model_config("tiny"), load_backbone_weights=False).eval()
    finally:
        torch.set_default_dtype(previous)
    d, bf16 = vla.config.decoder.action_dim, torch.bfloat16
    x = torch.randn(2, 10, d, dtype=bf16)
    prefix = torch.randn(2, 7, vla.backbone.hidden_size, dtype=bf16)
    kv, cond = vla.decoder.encode_prefix(prefix, torch.zeros(2, 7, dtype=torch.bool))
    ones = torch.ones(2, d, dtype=torch.bool)
    out = vla.decoder(x, torch.rand(2, dtype=bf16), torch.zeros(2, d, dtype=bf16), ones, ones, kv,
                      torch.ones(2, 7, dtype=torch.bool), cond=cond)
    assert out.dtype == torch.bfloat16 and out.shape == x.shape and torch.isfinite(out.float()).all()


def test_bad_dtype_and_missing_gpu_are_clear_errors():
    with pytest.raises(ValueError, match=r"--dtype must be one of \['bfloat16', 'float32'\], got 'fp8'"):
        bench_latency(dtype="fp8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cuda: torch .* sees no CUDA device"):
            bench_latency(device="cuda")


def test_bench_decide_times_each_k_from_the_real_loop(tiny_checkpoint, tmp_path):
    from stack.bench import bench_decide

    out = tmp_path / "decide.json"
    result = bench_decide("vla_stack/FetchPush-v0", tiny_checkpoint, world_model="oracle", scorer="oracle_outcome",
                          candidates=[1, 2], decisions=2, execute_horizon=5, num_flow_steps=2, json=str(out))
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["machine"]["cpu_count"] >= 1 and result["machine"]["torch_threads"] >= 1
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == ["baseline", "K=1", "K=2"] and [r["candidates"] for r in rows.values()] == [1, 1, 2]
    assert rows["baseline"]["world_model"] == "none" and rows["baseline"]["imagine_ms"] is None
    chunk_s = 5 / result["control_hz"]
    for name, r in rows.items():
        assert r["decisions"] == len(r["per_decision"]) == 2
        for d in r["per_decision"]:  # the parts are timed inside the decision, so they sum to at most it
            parts = d["policy_ms"] + (d["imagine_ms"] or 0.0) + (d["score_ms"] or 0.0)
            assert 0 < parts <= d["total_ms"]
            assert (d["imagine_ms"] is None) == (name == "baseline")
        assert r["rtf"]["p50"] == pytest.approx(r["total_ms"]["p50"] / 1e3 / chunk_s)
        assert r["over_k1"] == pytest.approx(r["total_ms"]["p50"] / rows["K=1"]["total_ms"]["p50"])
        assert r["over_baseline"] == pytest.approx(r["total_ms"]["p50"] / rows["baseline"]["total_ms"]["p50"])
    assert rows["K=1"]["over_k1"] == 1.0 and rows["baseline"]["over_baseline"] == 1.0
