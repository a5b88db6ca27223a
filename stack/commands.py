"""Subcommands of ``vla-stack`` other than the Lightning ones; each is a function whose signature
is its command line."""
from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path

import numpy as np

from components.config_files import asset_path, config_path
from components.embodiment import Embodiments
from components.errors import UsageError

#: ``vla-stack fit --config`` files of train_demo, in order: the shared base, then the demo's overlay
TRAIN_CONFIGS = (config_path("train") / "base.yaml", config_path("train") / "vla_tiny.yaml")


def synth(out_dir: str = "runs/data", episodes: int = 8, steps: int = 30, seed: int = 0,
          embodiments: list[str] | None = None) -> list[str]:
    """Write synthetic point-reaching episode stores (one per embodiment) for tests and the demo.

    Args:
        out_dir: directory that receives ``synthetic_<embodiment>.zarr``.
        episodes: episodes per store.
        steps: frames per episode.
        seed: random seed of the scenes.
        embodiments: which embodiments (default: all under configs/embodiments).
    """
    from components.synthetic import make_synthetic_store
    specs = Embodiments.from_config_dir(embodiments)
    paths = []
    for i, spec in enumerate(specs):
        path = Path(out_dir) / f"synthetic_{spec.name}.zarr"
        if path.exists():
            shutil.rmtree(path)
        make_synthetic_store(path, spec, episodes=episodes, steps=steps, seed=seed + i)
        print(f"wrote {path}: {episodes} episodes x {steps} frames ({spec.name})")
        paths.append(str(path))
    return paths


def stats(data: list[str], out: str = "norm_stats.json") -> str:
    """Compute normalization statistics (q01/q99, masked dims skipped) of episode stores.

    Writes one entry per embodiment (what training uses, pooled over its stores) and one per
    dataset (``dataset:<path>``), and prints the file's sha256.

    Args:
        data: episode store paths.
        out: output JSON path.
    """
    from components.datamodule import compute_embodiment_stats, open_checked_stores
    from components.normalization import save_stats
    stores, embodiments = open_checked_stores(data, where="--data")
    result = compute_embodiment_stats(stores, embodiments)
    for s in stores:
        result[f"dataset:{s.path}"] = compute_embodiment_stats([s], embodiments)[s.embodiment]
    digest = save_stats(out, result)
    print(f"wrote {out} (sha256 {digest}) for {sorted(k for k in result if not k.startswith('dataset:'))}")
    return out


def export(policy: str, out: str, num_steps: int | None = None, atol: float = 1e-4,
           embodiment: list[str] | None = None, instruction_tokens: int = 64) -> str:
    """Export a policy for onnxruntime: the action decoder (the whole Euler loop) and the backbone, one
    fixed-shape graph per embodiment.

    ``out`` becomes a complete policy directory (the checkpoint plus ``decoder.onnx`` and ``backbone/``),
    loadable with ``Policy.from_pretrained(out, runtime="onnxruntime")`` (or ``decoder="onnx"``: the decoder
    graph only). Every graph is checked against torch before it is kept.

    Args:
        policy: checkpoint directory.
        out: output directory.
        num_steps: Euler steps baked into the graph (default: the model's).
        atol: largest allowed |onnxruntime - torch| on the check inputs (relative to the output's scale).
        embodiment: embodiments whose backbone graph is exported (default: all the checkpoint knows).
        instruction_tokens: instruction tokens each backbone graph has room for beyond the embodiment's
            fixed prompt; a longer instruction is refused at run time.
    """
    import torch

    from components.checkpoint_io import replace_directory
    from components.onnx_export import DecoderSampler, OnnxDecoder, example_inputs, export_backbones, export_decoder
    from components.policy import BACKBONE_DIR, DECODER_FILE, Policy
    if not atol > 0:
        raise UsageError(f"--atol must be > 0 (the largest |onnxruntime - torch| kept), got {atol}")
    if num_steps is not None and num_steps < 1:
        raise UsageError(f"--num_steps must be >= 1 (or unset: the model's own), got {num_steps}")
    if instruction_tokens < 1:
        raise UsageError(f"--instruction_tokens must be >= 1, got {instruction_tokens}")
    src, dst = Path(policy).resolve(), Path(out).resolve()
    if dst.exists() and not dst.is_dir():
        raise UsageError(f"--out: '{out}' is a file; expected a directory to write the policy to")
    pol = Policy.from_pretrained(src)
    vla = pol.vla
    unknown = sorted(set(embodiment or []) - set(pol.embodiments))
    if unknown:
        raise UsageError(f"--embodiment: {unknown} not in the checkpoint (it knows {pol.embodiments})")
    n = num_steps or vla.config.num_flow_steps
    with replace_directory(dst) as tmp:  # a failed check or a killed export leaves ``out`` as it was
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        path = export_decoder(vla.decoder, n, tmp / DECODER_FILE)
        torch.manual_seed(0)
        inputs = example_inputs(vla.decoder, batch=2, k=3, horizon=7, length=33)
        with torch.no_grad():
            ref = DecoderSampler(vla.decoder, n)(*inputs).numpy()
        got = OnnxDecoder(path)(*inputs)
        err = float(np.abs(got - ref).max())
        if err > atol:
            raise RuntimeError(f"exported decoder disagrees with torch: max |diff| {err:.2e} > {atol:g}; not kept")
        print(f"wrote {dst / DECODER_FILE} ({n} Euler steps); onnxruntime vs torch max |diff| = {err:.2e}", flush=True)
        export_backbones(pol, embodiment or pol.embodiments, tmp / BACKBONE_DIR, instruction_tokens, atol,
                         shown=dst / BACKBONE_DIR)
    return str(dst)


def sample(policy: str, embodiment: list[str] | None = None, num_samples: int = 1, seed: int = 0,
           decoder: str = "torch", runtime: str = "torch") -> None:
    """Sample one chunk per embodiment on a synthetic observation and print it with slot names.

    Args:
        policy: checkpoint directory.
        embodiment: embodiments to sample for (default: all the checkpoint knows).
        num_samples: candidates per observation (the first is printed).
        seed: noise seed.
        decoder: "torch" or "onnx".
        runtime: "torch" or "onnxruntime" (the whole exported policy).
    """
    from components.policy import Policy
    from components.synthetic import INSTRUCTIONS, synthetic_observation
    if num_samples < 1:
        raise UsageError(f"--num_samples must be >= 1, got {num_samples}")
    pol = Policy.from_pretrained(policy, decoder=decoder, runtime=runtime)
    rng = np.random.default_rng(seed)
    for name in embodiment or pol.embodiments:
        spec = pol.processor.embodiments[name]
        target, agent = rng.uniform(-0.8, 0.8, 2), rng.uniform(-0.8, 0.8, 2)
        obs = synthetic_observation(spec, target, agent)
        t0 = time.perf_counter()
        chunks = pol.sample(obs, name, INSTRUCTIONS[0], num_samples=num_samples, seed=seed)
        ms = (time.perf_counter() - t0) * 1e3
        shown = min(4, chunks.shape[1])
        print(f"\n{name}: chunk {tuple(chunks.shape[1:])} ({num_samples} candidate(s), {ms:.0f} ms); "
              f"first {shown} steps of candidate 0:")
        print(f"  {'slot':<22}" + "".join(f"{'t=' + str(t):>9}" for t in range(shown)))
        for j, slot in enumerate(spec.action_slots):
            print(f"  {slot.name:<22}" + "".join(f"{chunks[0, t, j]:9.3f}" for t in range(shown)))


def _loss_curve(log_root: Path) -> list[float]:
    files = sorted(log_root.glob("logs/version_*/metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not files:
        return []
    with open(files[-1]) as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


DEFAULT_POLICY = asset_path("default_policy")
DEMO_TASKS = (  # (env id, share of the episodes, env kwargs)
    ("vla_stack/FetchReach-v0", 1.0, {}),
    ("vla_stack/WheeledHallway-v0", 1.0, {}),
    ("vla_stack/AlohaTransferCube-v0", 0.2, {"render_quality": "fast"}),
)


def demo(episodes: int = 5, seed: int = 1000, out_dir: str = "runs/demo", policy: str | None = None,
         max_steps: int | None = None) -> dict:
    """The main job: the shipped generalist (one set of weights) closed-loop in the simulators:
    Fetch reach, the wheeled base in the stock hallway, ALOHA transfer cube; then one graph
    navigation episode in a house it was not trained in (map from RGB-D, route of subgoals, the same
    policy's waypoints toward each: ``nav --mode graph+vla``). Writes a video
    and a result JSON per task under ``out_dir`` and prints the success rates.

    Args:
        episodes: episodes per task (ALOHA gets a fifth of them: its episodes are long).
        seed: seed of the first episode (the shipped policy was trained on seeds below 1000).
        out_dir: where videos and JSON results go.
        policy: checkpoint directory (default: the embedded one, components/assets/default_policy).
        max_steps: cap on env steps per episode (default: each env's own limit).
    """
    from stack.runner import run
    policy = policy or str(DEFAULT_POLICY)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    results = {}
    for env, share, kwargs in DEMO_TASKS:
        name = env.split("/")[1].removesuffix("-v0")
        results[env] = run(env, policy, episodes=max(1, round(episodes * share)), seed=seed, env_kwargs=kwargs,
                           max_steps=max_steps, video=f"{out_dir}/{name}.mp4", video_episodes=2, json=f"{out_dir}/{name}.json")
    print(f"\n{'task':<34}{'success':>10}{'95% CI':>18}{'decision p50 ms':>18}")
    for env, r in results.items():
        lo, hi = r["ci95"]
        print(f"{env:<34}{r['successes']:>5}/{r['episodes']:<4}{f'[{lo:.2f}, {hi:.2f}]':>18}"
              f"{r['decision_ms']['p50']:>18.0f}")
    from stack.nav import nav
    tour = nav("house", "go to the kitchen", policy=policy, mode="graph+vla", episodes=1, seed=seed,
               max_steps=max_steps, video=f"{out_dir}/nav_house.mp4", json=f"{out_dir}/nav_house.json")
    lo, hi = tour["ci95"]
    print(f"{'nav house (graph+vla)':<34}{tour['successes']:>5}/{tour['episodes']:<4}"
          f"{f'[{lo:.2f}, {hi:.2f}]':>18}{'SPL':>12} {tour['spl']:.2f}")
    results["nav house"] = tour
    print(f"videos and results: {out_dir}/")
    return results


def train_demo(steps: int = 300, episodes: int = 8) -> None:
    """Train the tiny VLA from nothing in a few minutes: write the small synthetic dataset, train
    jointly on all four embodiments, then sample one chunk per embodiment from the checkpoint.
    Everything is written under ./runs (the paths of configs/train/vla_tiny.yaml, over base.yaml).

    Args:
        steps: training steps.
        episodes: synthetic episodes per embodiment.
    """
    from stack.cli import lightning_main
    synth(out_dir="runs/data", episodes=episodes)
    t0 = time.perf_counter()
    lightning_main(["fit", *(a for c in TRAIN_CONFIGS for a in ("--config", str(c))), "--trainer.max_steps", str(steps)])
    losses = _loss_curve(Path("runs/vla_tiny"))
    if losses:
        print(f"\ntrained {steps} steps in {time.perf_counter() - t0:.0f} s: "
              f"train loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    sample("runs/vla_tiny/pretrained")


def eval_world_model(world_model: str, data: str, json: str | None = None, episodes: int = 3, stride: int = 5,
                     batch_size: int = 16, seed: int = 0, num_inference_steps: int | None = None,
                     guidance_scale: float | None = None, scorer_model: str | None = None) -> dict:
    """Prediction error of a learned world model per predicted step, against copying the last frame.

    Windows start every ``stride`` frames of the store's last ``episodes`` episodes (the ones
    training held out with ``data.val_episodes``); errors are MSE of pixels in [0, 1] and of latents.

    Args:
        world_model: world-model pipeline directory (what `fit` with a world-model config exports).
        data: episode store (expert episodes or recorded rollouts) of an embodiment the model knows.
        json: also write the result here (atomically).
        episodes: how many of the store's last episodes to evaluate on.
        stride: frames between window starts.
        batch_size: windows imagined per pipeline call.
        seed: noise seed of the sampler.
        num_inference_steps: scheduler steps (default: the model's).
        guidance_scale: action guidance (default: the model's; != 1 needs a model trained with action dropout).
        scorer_model: a progress-scorer directory: also report its value error (MAE against the real value
            label, and the correlation) on the last imagined frame, the real frame there and the last
            context frame; the store needs a per-frame reward.

    Besides copy-last, each window is also imagined under the next window's action chunk ("shuffled"): an
    error no higher than with the true chunk means the model does not use its actions. Ranking agreement
    with the oracle's true outcomes needs the simulator: ``vla-stack run ... --rank_agreement true``.
    """
    from components.datamodule import open_checked_stores
    from stack.results import write_json
    from world_model.evaluate import prediction_errors
    from world_model.learned import load_world_model

    for name, value in (("--episodes", episodes), ("--stride", stride), ("--batch_size", batch_size)):
        if value < 1:
            raise UsageError(f"{name} must be >= 1, got {value}")
    if num_inference_steps is not None and num_inference_steps < 1:
        raise UsageError(f"--num_inference_steps must be >= 1, got {num_inference_steps}")
    if guidance_scale is not None and guidance_scale < 0:
        raise UsageError(f"--guidance_scale must be >= 0, got {guidance_scale}")
    model = load_world_model(world_model)
    stores, embodiments = open_checked_stores([data], where="--data")
    store, spec = stores[0], embodiments[stores[0].embodiment]
    model.check_compatible(spec)
    scorer = gamma = None
    if scorer_model is not None:
        from world_model.progress import ProgressScorer
        scorer = ProgressScorer.from_pretrained(scorer_model, spec)
        gamma = float(scorer.meta["gamma"])
        if "reward" not in store.keys:
            raise UsageError(f"--scorer_model needs value labels: --data {data} has no per-frame 'reward' "
                             f"(record with `vla-stack run --record`; Fetch: --env_kwargs '{{reward_type: dense}}')")
    held_out = list(range(max(0, store.n_episodes - episodes), store.n_episodes))
    errors = prediction_errors(model, store, spec, held_out, stride=stride, batch_size=batch_size, seed=seed,
                               num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                               scorer=scorer, gamma=gamma)
    if not errors["windows"]:
        raise UsageError(f"--data {data}: episodes {held_out} have no window of {model.execute_steps + 1} frames "
                         f"(execute_steps {model.execute_steps} + 1); give more --episodes or longer episodes")
    result = {"world_model": world_model, "architecture": type(model.pipeline.transformer).__name__,
              "data": data, "embodiment": spec.name, "episodes": held_out, "stride": stride, **errors}
    print(f"{'step':>5} {'pixel model':>12} {'pixel copy':>11} {'pixel shuf':>11} {'pixel AE':>9} "
          f"{'latent model':>13} {'latent copy':>12} {'latent shuf':>12}")
    for i, step in enumerate(errors["steps"]):
        p, lat = errors["pixel_mse"], errors["latent_mse"]
        print(f"{step:>5} {p['model'][i]:>12.5f} {p['copy_last'][i]:>11.5f} {p['shuffled_actions'][i]:>11.5f} "
              f"{p['autoencoder'][i]:>9.5f} {lat['model'][i]:>13.5f} {lat['copy_last'][i]:>12.5f} "
              f"{lat['shuffled_actions'][i]:>12.5f}")
    for name, v in errors.get("scorer_value", {}).items():
        print(f"scorer value of the {name.replace('_', '-')} frame: MAE {v['mae']:.5f}, Pearson with the label "
              f"{'-' if v['pearson'] is None else format(v['pearson'], '.3f')}")
    print(f"{errors['windows']} windows of episodes {held_out[0]}..{held_out[-1]} of {data}")
    if json:
        write_json(result, json)
    return result


def calibrate_surprise(results: str | list[str], quantile: float = 0.95) -> float:
    """The verify threshold: the ``quantile`` of the surprise values of held-out runs without verify.

    Run the arm to be verified on seeds the evaluation will not use, with a learned world model and no
    --verify, writing its JSON (``vla-stack run ... --json held.json``); the printed value is what
    ``--surprise_threshold`` (or an ablation arm's ``surprise_threshold``) takes.

    Args:
        results: a JSON file of ``vla-stack run``, or a list of them (``'[a.json, b.json]'``); their
            per-episode decisions carry the surprise values.
        quantile: in (0, 1]; 0.95 replans on about 5 % of predicted steps of runs like these.
    """
    import json as json_module

    from planners.imagine import calibrate_surprise as quantile_of, surprises_of
    if not 0.0 < quantile <= 1.0:
        raise UsageError(f"--quantile must be in (0, 1], got {quantile}")
    results = [results] if isinstance(results, str) else list(results)
    values = []
    for path in results:
        try:
            values += surprises_of(json_module.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise UsageError(f"--results {path}: no such file (a `vla-stack run --json` result)") from None
        except (json_module.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise UsageError(f"--results {path}: not a `vla-stack run --json` result ({type(err).__name__}: {err})") from None
    finite = [v for v in values if np.isfinite(v)]
    if not finite:
        raise UsageError(f"--results {results}: no surprise values; they come from runs with a "
                         f"--world_model (--world_model none records none)")
    threshold = quantile_of(finite, quantile)
    print(f"surprise threshold {threshold:.6f}: the {quantile:g} quantile of {len(finite)} surprise values "
          f"from {len(results)} run(s)")
    return threshold
