"""``vla-stack bench policy``: latencies and throughputs measured side by side in one run."""
from __future__ import annotations

import statistics
import time


def bench_policy(policy: str, data: list[str] | None = None, repeats: int = 20, num_steps: int = 10,
                 batch_size: int = 16, threads: int | None = None) -> dict:
    """Benchmark a policy: chunk latency at K=1 and K=8, cached prefix vs recomputing the
    backbone every flow step, torch vs onnxruntime, training and data-loader samples/s.

    Args:
        policy: checkpoint directory.
        data: episode stores for the training/data-loader rows (default: synthetic stores written
            to a temporary directory).
        repeats: timed repetitions per row (after one warm-up).
        num_steps: Euler steps N.
        batch_size: batch size of the training and data-loader rows.
        threads: torch/onnxruntime threads (default: torch's default).
    """
    import tempfile
    from pathlib import Path

    import numpy as np
    import torch

    from components.datamodule import DatasetEntry, MixtureDataModule
    from components.onnx_export import OnnxDecoder, export_decoder, image_mask_input
    from components.policy import Policy
    from components.synthetic import synthetic_observation
    from stack.commands import synth

    if threads:
        torch.set_num_threads(threads)
    pol = Policy.from_pretrained(policy)
    vla = pol.vla
    name = pol.embodiments[0]
    spec = pol.processor.embodiments[name]
    batch = pol.batch(synthetic_observation(spec), name, "reach the red target")
    h, d = spec.chunk_horizon, vla.config.decoder.action_dim

    def timed(fn) -> list[float]:
        fn()
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
        return out

    rows: dict[str, list[float]] = {}
    with torch.no_grad():
        rows["backbone B (prefix: backbone + cross K/V)"] = timed(lambda: vla.encode(batch))
        prefix = vla.encode(batch)
        rep = {k: batch[k] for k in ("state", "state_mask", "dim_mask")}
        x = torch.randn(1, h, d)
        t = torch.ones(1)
        rows["decoder step D (K=1)"] = timed(lambda: vla.velocity(x, t, rep, prefix))
        for k in (1, 8):
            rows[f"chunk K={k} N={num_steps} cached (torch)"] = timed(
                lambda k=k: vla.sample(batch, h, k, num_steps))
        rows[f"chunk K=1 N={num_steps} uncached (torch)"] = timed(
            lambda: vla.sample(batch, h, 1, num_steps, cache=False))
        tmp = Path(tempfile.mkdtemp(prefix="vla_bench_"))
        onnx = OnnxDecoder(export_decoder(vla.decoder, num_steps, tmp / "decoder.onnx"), threads=threads)
        ort_rows = []
        for other in pol.embodiments:  # the decoder's cost grows with the horizon: one row pair each
            other_spec = pol.processor.embodiments[other]
            if other_spec.chunk_horizon in {pol.processor.embodiments[e].chunk_horizon for e in ort_rows}:
                continue
            ort_rows.append(other)
            ob_batch = pol.batch(synthetic_observation(other_spec), other, "reach the red target")
            hidden = vla.backbone(ob_batch["input_ids"], ob_batch["attention_mask"], ob_batch["pixel_values"],
                                  ob_batch["image_grid_thw"])
            noise8 = torch.randn(1, 8, other_spec.chunk_horizon, d)
            tag = f"K=8 N={num_steps} H={other_spec.chunk_horizon} ({other})"
            rows[f"decoder loop {tag} torch eager"] = timed(
                lambda: _decoder_only(vla, hidden, ob_batch, noise8, num_steps))
            rows[f"decoder loop {tag} onnxruntime"] = timed(lambda: onnx(
                noise8, hidden, vla.decoder_mask(ob_batch), ob_batch["state"], ob_batch["state_mask"],
                ob_batch["dim_mask"], image_mask_input(vla, ob_batch)))

    # training and data loading on the same machine, same run
    stores = data or synth(out_dir=str(tmp / "data"), episodes=4, steps=30, embodiments=pol.embodiments)
    dm = MixtureDataModule([DatasetEntry(p) for p in stores], batch_size=batch_size, num_workers=2,
                           samples_per_epoch=batch_size * (repeats + 2))
    dm.setup("fit")
    loader_iter = iter(dm.train_dataloader())
    next(loader_iter)
    t0 = time.perf_counter()
    n_batches = 0
    for _ in loader_iter:
        n_batches += 1
    loader_sps = n_batches * batch_size / (time.perf_counter() - t0)
    train_batch = dm.processor.collate([dm.train_set[i % len(dm.train_set)] for i in range(batch_size)])
    vla.train()
    opt = torch.optim.AdamW(vla.parameters(), lr=1e-5)

    def train_step():
        opt.zero_grad()
        vla.loss(train_batch).backward()
        opt.step()

    train_ms = timed(train_step)
    vla.eval()
    train_sps = batch_size / (statistics.median(train_ms) / 1e3)

    med = {k: statistics.median(v) for k, v in rows.items()}
    p95 = {k: float(np.percentile(v, 95)) for k, v in rows.items()}
    print(f"\npolicy {policy} ({pol.describe()}), embodiment {name}, H={h}, torch threads "
          f"{torch.get_num_threads()}, {repeats} repeats\n")
    print(f"{'measurement':<56}{'p50 ms':>10}{'p95 ms':>10}")
    for k in rows:
        print(f"{k:<56}{med[k]:10.2f}{p95[k]:10.2f}")
    b, dstep = med["backbone B (prefix: backbone + cross K/V)"], med["decoder step D (K=1)"]
    n = num_steps
    predicted = n * (b + dstep) / (b + n * dstep)
    measured = med[f"chunk K=1 N={n} uncached (torch)"] / med[f"chunk K=1 N={n} cached (torch)"]
    ort_speedup = {}
    for other in ort_rows:
        tag = f"K=8 N={n} H={pol.processor.embodiments[other].chunk_horizon} ({other})"
        ort_speedup[other] = med[f"decoder loop {tag} torch eager"] / med[f"decoder loop {tag} onnxruntime"]
    result = {
        "uncached_over_cached": measured, "predicted_N(B+D)/(B+N*D)": predicted,
        "measured_over_predicted": measured / predicted,
        "onnxruntime_speedup_K8": ort_speedup,
        "train_samples_per_s": train_sps, "loader_samples_per_s": loader_sps,
        "loader_over_train": loader_sps / train_sps,
        "p50_ms": med, "p95_ms": p95,
    }
    print(f"\n{'ratio':<56}{'value':>10}")
    print(f"{'uncached / cached, measured':<56}{measured:10.2f}")
    print(f"{'N(B+D)/(B+N*D), predicted from B and D':<56}{predicted:10.2f}")
    print(f"{'measured / predicted':<56}{measured / predicted:10.2f}")
    for other, ratio in ort_speedup.items():
        print(f"{'onnxruntime speed-up over eager, K=8, ' + other:<56}{ratio:10.2f}")
    print(f"{'training samples/s (batch ' + str(batch_size) + ')':<56}{train_sps:10.1f}")
    print(f"{'data-loader samples/s (2 workers)':<56}{loader_sps:10.1f}")
    print(f"{'data loader / training':<56}{loader_sps / train_sps:10.2f}")
    return result


def _decoder_only(vla, hidden, batch, noise, num_steps):
    """The torch twin of the exported graph: cross K/V from the prefix, then the Euler loop."""
    from components.onnx_export import DecoderSampler, image_mask_input
    return DecoderSampler(vla.decoder, num_steps)(noise, hidden, vla.decoder_mask(batch), batch["state"],
                                                  batch["state_mask"], batch["dim_mask"],
                                                  image_mask_input(vla, batch))
