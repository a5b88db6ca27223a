"""``vla-stack bench policy``: latencies and throughputs measured side by side in one run."""
from __future__ import annotations

import statistics
import time


def _timed(fn, repeats: int, warmups: int = 1, sync=None) -> list[float]:
    """Wall-clock milliseconds of ``repeats`` calls of ``fn`` after ``warmups`` untimed ones;
    ``sync`` (e.g. ``torch.cuda.synchronize``) is called before each clock read."""
    sync = sync or (lambda: None)
    for _ in range(warmups):
        fn()
    sync()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


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
    from components.onnx_export import (OnnxDecoder, export_backbones, export_decoder, image_mask_input,
                                        motion_input)
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
        return _timed(fn, repeats, warmups=1)

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
                ob_batch["dim_mask"], image_mask_input(vla, ob_batch), motion_input(vla, ob_batch)))
        # the whole policy (preprocessing, backbone, decoder, limits) through torch and through onnxruntime
        ort_policy = Policy(vla, pol.processor, onnx, export_backbones(pol, ort_rows, tmp / "backbone"))
        for other in ort_rows:
            obs = synthetic_observation(pol.processor.embodiments[other])
            tag = f"K=8 N={num_steps} ({other})"
            for runtime, p in (("torch eager", pol), ("onnxruntime", ort_policy)):
                rows[f"whole policy {tag} {runtime}"] = timed(
                    lambda p=p, obs=obs, other=other: p.sample(obs, other, "reach the red target", 8, num_steps, seed=0))

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
    ort_speedup, policy_speedup = {}, {}
    for other in ort_rows:
        tag = f"K=8 N={n} H={pol.processor.embodiments[other].chunk_horizon} ({other})"
        ort_speedup[other] = med[f"decoder loop {tag} torch eager"] / med[f"decoder loop {tag} onnxruntime"]
        whole = f"whole policy K=8 N={n} ({other})"
        policy_speedup[other] = med[f"{whole} torch eager"] / med[f"{whole} onnxruntime"]
    result = {
        "uncached_over_cached": measured, "predicted_N(B+D)/(B+N*D)": predicted,
        "measured_over_predicted": measured / predicted,
        "onnxruntime_speedup_K8": ort_speedup, "whole_policy_onnxruntime_speedup_K8": policy_speedup,
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
    for other, ratio in policy_speedup.items():
        print(f"{'whole policy onnxruntime / eager speed-up, K=8, ' + other:<56}{ratio:10.2f}")
    print(f"{'training samples/s (batch ' + str(batch_size) + ')':<56}{train_sps:10.1f}")
    print(f"{'data-loader samples/s (2 workers)':<56}{loader_sps:10.1f}")
    print(f"{'data loader / training':<56}{loader_sps / train_sps:10.2f}")
    return result


def _decoder_only(vla, hidden, batch, noise, num_steps):
    """The torch twin of the exported graph: cross K/V from the prefix, then the Euler loop."""
    from components.onnx_export import DecoderSampler, image_mask_input, motion_input
    return DecoderSampler(vla.decoder, num_steps)(noise, hidden, vla.decoder_mask(batch), batch["state"],
                                                  batch["state_mask"], batch["dim_mask"],
                                                  image_mask_input(vla, batch), motion_input(vla, batch))


def bench_latency(model: str = "tiny", embodiment: str = "aloha", device: str = "cpu", dtype: str = "float32",
                  candidates: list[int] | None = None, num_steps: int = 10, repeats: int = 20,
                  threads: int | None = None, json: str | None = None) -> dict:
    """Chunk latency of a model *configuration* (random weights, no checkpoint needed): backbone
    B, one decoder step D, chunks of K candidates with the cached prefix, and K=1 recomputing the
    backbone every flow step; on CPU or a GPU, in float32 or bfloat16. This is how the full-size
    model (``--model full``: Qwen3.5-4B architecture + 1.14B DiT) is timed without its weights;
    latency does not depend on the weights' values.

    The prompt is the embodiment's real prompt (one synthetic image per camera, state at the
    middle of its ranges). A config built from ``hf_config`` (no checkpoint) is tokenized with the
    committed tiny tokenizer; its special-token ids are set to that tokenizer's, so the prompt
    length is the tiny tokenizer's (printed), not the released Qwen tokenizer's.

    Args:
        model: model config name (``tiny``, ``full``) or path to a model YAML.
        embodiment: whose prompt, cameras and chunk horizon to time.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: ``float32`` or ``bfloat16`` (weights and activations).
        candidates: K values of the cached-chunk rows (default 1 and 8).
        num_steps: Euler steps N.
        repeats: timed repetitions per row (after two warm-ups).
        threads: torch CPU threads (default: torch's default).
        json: also write the results to this JSON file.
    """
    import json as json_module
    from pathlib import Path

    import numpy as np
    import torch

    from components import action_space
    from components.backbone import hf_config_of, load_tokenizer, make_image_processor
    from components.embodiment import Embodiments
    from components.errors import UsageError
    from components.normalization import NormStats
    from components.processor import VLAProcessor
    from components.synthetic import synthetic_observation
    from components.vla import VLA, load_model_config

    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    if dtype not in dtypes:
        raise UsageError(f"--dtype must be one of {sorted(dtypes)}, got {dtype!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: torch {torch.__version__} sees no CUDA device on this machine")
    if threads:
        torch.set_num_threads(threads)
    candidates = list(candidates or [1, 8])
    cfg = load_model_config(model)
    embodiments = Embodiments.from_config_dir([embodiment])
    spec = embodiments[embodiment]
    tokenizer = load_tokenizer(cfg.backbone)
    hf_config = hf_config_of(cfg.backbone)
    remapped = False
    if cfg.backbone.source == "config":
        ids = {key: tokenizer.convert_tokens_to_ids(tok) for key, tok in (
            ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
        remapped = any(getattr(hf_config, key) != value for key, value in ids.items())
        for key, value in ids.items():
            setattr(hf_config, key, value)
    # the processor normalizes the state input; with no data, its declared range stands in for q01/q99
    ranges = {}
    if spec.state_slots:
        mask = np.zeros(action_space.ACTION_DIM, bool)
        mask[spec.state_indices] = True
        ranges["state"] = NormStats(
            np.where(mask, action_space.pad(np.array([s.low for s in spec.state_slots]), spec.state_indices), -1.0),
            np.where(mask, action_space.pad(np.array([s.high for s in spec.state_slots]), spec.state_indices), 1.0),
            mask, 1)
    processor = VLAProcessor(tokenizer, make_image_processor(cfg.backbone, hf_config), embodiments,
                             {embodiment: ranges}, cfg.backbone.image_size)
    obs = synthetic_observation(spec)
    sample = processor.encode_observation(obs["images"], obs["state"], "pick up the red cube", embodiment)
    batch = {k: (v.to(device, dtypes[dtype]) if v.is_floating_point() else v.to(device)) if torch.is_tensor(v) else v
             for k, v in processor.collate([sample]).items()}

    torch.manual_seed(0)
    t0 = time.perf_counter()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtypes[dtype])
    try:
        with torch.device(device):
            vla = VLA(cfg, hf_config=hf_config, load_backbone_weights=False).eval()
    finally:
        torch.set_default_dtype(previous)
    build_s = time.perf_counter() - t0
    n_backbone = sum(p.numel() for p in vla.backbone.parameters())
    n_decoder = sum(p.numel() for p in vla.decoder.parameters())
    h, d = spec.chunk_horizon, vla.config.decoder.action_dim
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def timed(fn) -> list[float]:
        return _timed(fn, repeats, warmups=2, sync=sync)

    rows: dict[str, list[float]] = {}
    with torch.no_grad():
        rows["backbone B (prefix: backbone + cross K/V)"] = timed(lambda: vla.encode(batch))
        prefix = vla.encode(batch)
        x = torch.randn(1, h, d, device=device, dtype=dtypes[dtype])
        t = torch.ones(1, device=device, dtype=dtypes[dtype])
        rows["decoder step D (K=1)"] = timed(lambda: vla.velocity(x, t, batch, prefix))
        for k in candidates:
            noise = torch.randn(1, k, h, d, device=device, dtype=dtypes[dtype])
            rows[f"chunk K={k} N={num_steps} cached"] = timed(
                lambda k=k, noise=noise: vla.sample(batch, h, k, num_steps, noise=noise))
        noise = torch.randn(1, 1, h, d, device=device, dtype=dtypes[dtype])
        rows[f"chunk K=1 N={num_steps} uncached"] = timed(
            lambda: vla.sample(batch, h, 1, num_steps, noise=noise, cache=False))
    med = {k: statistics.median(v) for k, v in rows.items()}
    p95 = {k: float(np.percentile(v, 95)) for k, v in rows.items()}
    b, dstep = med["backbone B (prefix: backbone + cross K/V)"], med["decoder step D (K=1)"]
    predicted = num_steps * (b + dstep) / (b + num_steps * dstep)
    measured = med[f"chunk K=1 N={num_steps} uncached"] / med[f"chunk K=1 N={num_steps} cached"]
    where = torch.cuda.get_device_name(device) if device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    result = {
        "model": model, "embodiment": embodiment, "device": where, "dtype": dtype, "torch": torch.__version__,
        "backbone_parameters": n_backbone, "decoder_parameters": n_decoder, "prompt_tokens": int(batch["input_ids"].shape[1]),
        "special_token_ids_remapped": remapped, "horizon": h, "num_steps": num_steps, "repeats": repeats,
        "build_s": round(build_s, 1), "p50_ms": med, "p95_ms": p95,
        "uncached_over_cached": measured, "predicted_N(B+D)/(B+N*D)": predicted,
        "peak_gpu_memory_gib": (torch.cuda.max_memory_allocated(device) / 2**30) if device.startswith("cuda") else None,
    }
    print(f"\nmodel {model}: backbone {n_backbone / 1e9:.3f} B + decoder {n_decoder / 1e9:.3f} B parameters "
          f"(random weights, built in {build_s:.1f} s), {dtype} on {where}, torch {torch.__version__}\n"
          f"embodiment {embodiment}: {result['prompt_tokens']} prompt tokens"
          f"{' (tiny tokenizer, special-token ids remapped to it)' if remapped else ''}, H={h}, "
          f"N={num_steps}, {repeats} repeats\n")
    print(f"{'measurement':<48}{'p50 ms':>10}{'p95 ms':>10}")
    for k in rows:
        print(f"{k:<48}{med[k]:10.2f}{p95[k]:10.2f}")
    print(f"\n{'uncached / cached, measured':<48}{measured:10.2f}")
    print(f"{'N(B+D)/(B+N*D), predicted from B and D':<48}{predicted:10.2f}")
    if result["peak_gpu_memory_gib"] is not None:
        print(f"{'peak GPU memory allocated (GiB)':<48}{result['peak_gpu_memory_gib']:10.2f}")
    if json:
        Path(json).parent.mkdir(parents=True, exist_ok=True)
        Path(json).write_text(json_module.dumps(result, indent=2))
    return result


def _malformed_frames(request: dict) -> list:
    """Frames a server must answer with an error and survive: bad msgpack, a text frame, a missing
    key, a wrong image shape, an unknown embodiment."""
    from planners.remote import pack

    cam = next(iter(request["images"]))
    return [b"\xc1\x00", "not msgpack", pack({k: v for k, v in request.items() if k != "prompt"}),
            pack({**request, "images": {**request["images"], cam: request["images"][cam][1:]}}),
            pack({**request, "embodiment": "spot"})]


def _load_phase(uri: str, spec, clients: int, requests: int, malformed_every: int) -> dict:
    """``clients`` threads, each on its own connection, sending ``requests`` observations one after
    another (plus a malformed frame after every ``malformed_every``-th); latencies of the good ones."""
    import threading

    import numpy as np
    from websockets.sync.client import connect

    from planners.remote import pack, unpack
    from stack.results import latency_summary

    latencies, batch_sizes, errors = [], [], []
    malformed = {"sent": 0, "answered": 0}
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(index: int) -> None:
        rng = np.random.default_rng(index)
        request = {"images": {c.name: rng.integers(0, 256, (c.height, c.width, 3), dtype=np.uint8)
                              for c in spec.cameras},
                   "state": np.array([(s.low + s.high) / 2 for s in spec.state_slots], np.float32),
                   "prompt": "reach the target", "embodiment": spec.name}
        bad = _malformed_frames(request)
        with connect(uri, compression=None, max_size=None) as ws:
            unpack(ws.recv())
            ws.send(pack(request))  # warm-up, untimed
            ws.recv()
            start.wait()
            for i in range(requests):
                t0 = time.perf_counter()
                ws.send(pack({**request, "seed": index * requests + i}))
                reply = ws.recv()
                ms = (time.perf_counter() - t0) * 1e3
                with lock:
                    if isinstance(reply, str) or unpack(reply)["actions"].shape != (spec.chunk_horizon,
                                                                                     spec.action_dim):
                        errors.append(reply if isinstance(reply, str) else "wrong actions shape")
                    else:
                        latencies.append(ms)
                        batch_sizes.append(unpack(reply)["server_timing"]["batch_size"])
                if malformed_every and i % malformed_every == malformed_every - 1:
                    ws.send(bad[(i // malformed_every) % len(bad)])
                    answer = ws.recv()
                    with lock:
                        malformed["sent"] += 1
                        malformed["answered"] += isinstance(answer, str) and "bad request" in answer

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"clients": clients, "requests": len(latencies), "errors": clients * requests - len(latencies), "first_error": errors[0] if errors else None,
            "malformed_sent": malformed["sent"], "malformed_answered": malformed["answered"],
            "latency_ms": latency_summary(latencies), "throughput_rps": len(latencies) / wall,
            "mean_batch": float(np.mean(batch_sizes)) if batch_sizes else None}


def bench_serve(policy: str, clients: int = 8, requests: int = 200, embodiment: str = "fetch",
                malformed_every: int = 10, batch_window_ms: float = 5.0, max_batch: int = 8,
                json: str | None = None) -> dict:
    """Load test of ``vla-stack serve`` over loopback: 1 client and ``clients`` clients, with
    batching on (``batch_window_ms``, ``max_batch``) and off (``max_batch`` 1); p50/p95 latency,
    throughput, errors (expected 0) and malformed frames answered (expected all).

    Args:
        policy: checkpoint directory to serve.
        clients: concurrent clients in the loaded phase.
        requests: good requests per client.
        embodiment: the embodiment the requests are for.
        malformed_every: one malformed frame after every this many good requests (0: none).
        batch_window_ms: the server's batching window in the batched runs.
        max_batch: the server's largest batch in the batched runs.
        json: write the result to this path.
    """
    from components.embodiment import Embodiments
    from components.errors import UsageError
    from stack.results import write_json
    from stack.serve import served

    for name, value in (("clients", clients), ("requests", requests), ("max_batch", max_batch)):
        if value < 1:
            raise UsageError(f"--{name} must be >= 1, got {value}")
    from pathlib import Path
    if not (Path(policy) / "embodiments.yaml").is_file():
        raise UsageError(f"--policy: '{policy}' is not a checkpoint directory (no embodiments.yaml)")
    specs = Embodiments.load(Path(policy) / "embodiments.yaml")
    if embodiment not in specs:
        raise UsageError(f"--embodiment: '{embodiment}' is not served by {policy}; it knows {specs.names()}")
    rows = []
    for mode, window, most in (("batched", batch_window_ms, max_batch), ("unbatched", 0.0, 1)):
        with served(policy, "--batch_window_ms", str(window), "--max_batch", str(most)) as uri:
            for n in (1, clients):
                rows.append({"mode": mode, "batch_window_ms": window, "max_batch": most,
                             **_load_phase(uri, specs[embodiment], n, requests, malformed_every)})
    result = {"policy": str(policy), "embodiment": embodiment, "rows": rows}
    print(f"\n{'mode':<11}{'clients':>8}{'requests':>9}{'errors':>7}{'malformed':>11}{'p50 ms':>9}{'p95 ms':>9}"
          f"{'req/s':>8}{'batch':>7}")
    for r in rows:
        print(f"{r['mode']:<11}{r['clients']:>8}{r['requests']:>9}{r['errors']:>7}"
              f"{str(r['malformed_answered']) + '/' + str(r['malformed_sent']):>11}{r['latency_ms']['p50']:9.1f}"
              f"{r['latency_ms']['p95']:9.1f}{r['throughput_rps']:8.1f}{r['mean_batch']:7.2f}")
    if json:
        write_json(result, json)
    return result


def _decide_rows(environment, decider, spec, horizon: int, decisions: int, seed: int, max_steps: int | None):
    """Per-decision timings of ``decider`` from the real loop (``run_episode``): seeded episodes until
    ``decisions`` + 1 decisions are made (the first one, a warm-up, is dropped). Each row: total ms
    (``run_episode``'s clock around ``decide``) and the decider's own policy / imagine / score ms."""
    from planners.episode import run_episode

    rows, episode = [], 0
    while len(rows) < decisions + 1:
        left = decisions + 1 - len(rows)
        cap = left * horizon if max_steps is None else min(max_steps, left * horizon)
        rec = run_episode(environment, decider, spec, seed + episode, execute_horizon=horizon,
                          temporal_ensemble=False, max_steps=cap)
        episode += 1
        for i, total in enumerate(rec.decision_ms):
            d = rec.decisions[i] if rec.decisions else {}
            rows.append({"total_ms": total, "policy_ms": rec.policy_ms[i], "imagine_ms": d.get("imagine_ms"),
                         "score_ms": d.get("score_ms")})
    return rows[1:decisions + 1], episode


def bench_decide(env: str, policy: str, world_model: str = "oracle", scorer: str = "oracle_outcome",
                 candidates: list[int] | None = None, decisions: int = 20, execute_horizon: int | None = None,
                 seed: int = 0, max_steps: int | None = None, num_flow_steps: int | None = None,
                 threads: int | None = None, scorer_model: str | None = None, json: str | None = None) -> dict:
    """Decision latency of the imagine-execute-verify loop per K, measured side by side in one run:
    p50/p95 of the whole decision and of its parts (policy: K chunks in one VLA call; imagine; score),
    the real-time factor (decision time over the time the executed part of a chunk takes at the control
    rate) and each K's ratio to K=1. A plain K=1 VLA row (no world model) is the baseline. Decisions come
    from ``run_episode`` on real env observations (the env steps with the chosen chunks).

    Args:
        env: environment id, e.g. vla_stack/FetchPush-v0 (the oracle needs Fetch or ALOHA).
        policy: checkpoint directory.
        world_model: oracle or a world-model checkpoint directory.
        scorer: what ranks the candidates (random, oracle_outcome, goal_latent, ...).
        candidates: the K values (default 1 4 8 16).
        decisions: timed decisions per K (after one untimed warm-up decision).
        execute_horizon: env steps executed per decision (default per action kind).
        seed: seed of the first episode (each K runs the same seeds).
        max_steps: cap on env steps per episode.
        num_flow_steps: Euler steps of the action decoder (default: the checkpoint's).
        threads: torch CPU threads (default: torch's default).
        scorer_model: the trained scorer's directory, for --scorer progress.
        json: write the result to this path.
    """
    import os
    import platform

    import gymnasium as gym
    import numpy as np
    import torch

    from components.errors import UsageError
    from stack.results import latency_summary, write_json
    from stack.runner import Arm, _check_inputs, executor_settings, load_policy, make_decider

    candidates = list(candidates or [1, 4, 8, 16])
    if world_model == "none":
        raise UsageError("--world_model: bench decide times imagining; give oracle or a world-model checkpoint "
                         "directory (the plain VLA is the baseline row already)")
    arms = [Arm("baseline")] + [Arm(f"K={k}", candidates=k, world_model=world_model, scorer=scorer,
                                                    scorer_model=scorer_model) for k in candidates]
    for arm in arms:
        arm.check()
    if decisions < 1:
        raise UsageError(f"--decisions must be >= 1, got {decisions}")
    if len(set(candidates)) != len(candidates):
        raise UsageError(f"--candidates: each K once, got {candidates}")
    if threads:
        torch.set_num_threads(threads)
    embodiment = _check_inputs(env, policy)
    pol, spec = load_policy(policy, "torch", embodiment, env)
    horizon, _ = executor_settings(spec, execute_horizon, False, imagines=True)
    chunk_s = horizon / spec.control_hz
    environment = gym.make(env)
    rows = []
    try:
        deciders = [make_decider(a, pol, embodiment, spec, environment, horizon, num_flow_steps) for a in arms]
        for arm, decider in zip(arms, deciders):
            timed, episodes = _decide_rows(environment, decider, spec, horizon, decisions, seed, max_steps)
            row = {"name": arm.name, "candidates": arm.candidates,
                   "world_model": arm.world_model if arm.imagines else "none",
                   "scorer": arm.scorer if arm.imagines else None, "decisions": len(timed), "episodes": episodes}
            for part in ("total", "policy", "imagine", "score"):
                values = [t[f"{part}_ms"] for t in timed if t[f"{part}_ms"] is not None]
                row[f"{part}_ms"] = latency_summary(values)
            row["rtf"] = {q: v / 1e3 / chunk_s for q, v in row["total_ms"].items()}
            row["per_decision"] = timed
            rows.append(row)
    finally:
        environment.close()
    reference = next((r for r in rows[1:] if r["candidates"] == 1), None)
    for r in rows:
        r["over_baseline"] = r["total_ms"]["p50"] / rows[0]["total_ms"]["p50"]
        r["over_k1"] = r["total_ms"]["p50"] / reference["total_ms"]["p50"] if reference else None
    result = {"env": env, "policy": str(policy), "embodiment": embodiment, "world_model": world_model,
              "scorer": scorer, "execute_horizon": horizon, "control_hz": spec.control_hz,
              "chunk_seconds": chunk_s, "decisions_per_k": decisions, "warmup_decisions": 1, "seed": seed,
              "num_flow_steps": num_flow_steps,
              "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "processor": platform.processor() or platform.machine(), "torch": torch.__version__,
                          "device": str(next(pol.vla.parameters()).device)},
              "rows": rows}
    print(_decide_table(result))
    if json:
        write_json(result, json)
    return result


def _decide_table(result: dict) -> str:
    def ms(summary, q):
        return "-" if summary is None else f"{summary[q]:.1f}"

    m = result["machine"]
    lines = [f"bench decide on {result['env']}: world model {result['world_model']}, scorer {result['scorer']}, "
             f"H={result['execute_horizon']} at {result['control_hz']:g} Hz ({result['chunk_seconds'] * 1e3:.0f} ms "
             f"of execution per decision), {result['decisions_per_k']} decisions per row after 1 warm-up; "
             f"{m['cpu_count']} CPUs, {m['torch_threads']} torch threads, {m['device']}", "",
             "| row | K | decision p50 ms | p95 ms | policy p50 | imagine p50 | score p50 | RTF p50 | RTF p95 "
             "| / K=1 | / baseline |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        over_k1 = "-" if r["over_k1"] is None else f"{r['over_k1']:.2f}"
        lines.append(f"| {r['name']} | {r['candidates']} | {ms(r['total_ms'], 'p50')} | {ms(r['total_ms'], 'p95')} "
                     f"| {ms(r['policy_ms'], 'p50')} | {ms(r['imagine_ms'], 'p50')} | {ms(r['score_ms'], 'p50')} "
                     f"| {r['rtf']['p50']:.3f} | {r['rtf']['p95']:.3f} | {over_k1} | {r['over_baseline']:.2f} |")
    return "\n".join(lines) + "\n"


def bench_route(side: int = 100, queries: int = 50, floorplans: list[str] | None = None, seed: int = 0,
                json: str | None = None) -> dict:
    """Route planning on a ``side`` x ``side`` lattice graph (10,000 nodes by default): A* p50/p95 ms over
    random start/goal pairs; and the mapping time (tour + open3d + grid + graph) of each floor plan.

    Args:
        side: the lattice is side x side nodes.
        queries: routes timed.
        floorplans: floor plans whose mapping time is measured (default: three_rooms, house).
        seed: seed of the start/goal pairs and the tours.
        json: also write the result here.
    """
    import time as _time

    import numpy as np

    from planners.navmap import lattice_map
    from stack.nav import _env, _plan
    from stack.results import latency_summary, write_json

    m = lattice_map(side)
    rng = np.random.default_rng(seed)
    nodes = list(m.graph.nodes)
    times = []
    for _ in range(queries):
        a, b = (nodes[i] for i in rng.choice(len(nodes), 2, replace=False))
        t0 = _time.perf_counter()
        m.astar(a, b)
        times.append((_time.perf_counter() - t0) * 1e3)
    result = {"graph_nodes": m.graph.number_of_nodes(), "graph_edges": m.graph.number_of_edges(),
              "route_ms": latency_summary(times), "queries": queries, "mapping": []}
    print(f"A* on {result['graph_nodes']} nodes / {result['graph_edges']} edges: p50 {result['route_ms']['p50']:.1f} ms, "
          f"p95 {result['route_ms']['p95']:.1f} ms ({queries} routes)")
    from planners.navmap import build_map
    for fp in floorplans or ["three_rooms", "house"]:
        env = _env(_plan(fp))
        try:
            nm = build_map(env, seed=seed)
        finally:
            env.close()
        row = {"floorplan": fp, "mapping_s": nm.mapping_s, "nodes": nm.graph.number_of_nodes(),
               "edges": nm.graph.number_of_edges(), "places": len(nm.places)}
        result["mapping"].append(row)
        print(f"map {fp}: {row['mapping_s']:.1f} s, {row['nodes']} nodes, {row['edges']} edges, {row['places']} places")
    if json:
        write_json(result, json)
    return result
