"""`vla-stack fit` end to end through LightningCLI, in a subprocess as a user runs it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "configs" / "train"
CONFIG = ["--config", str(TRAIN / "base.yaml"), "--config", str(TRAIN / "vla_tiny.yaml")]  # README's `fit`


def vla_stack(args, cwd, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "stack.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def fit_args(stores, *extra):
    datasets = json.dumps([{"path": stores[n], "weight": 1.0} for n in ("fetch", "wheeled")])
    return ["fit", *CONFIG, f"--data.datasets={datasets}", "--data.batch_size=4",
            "--data.num_workers=0", "--trainer.limit_val_batches=0", "--trainer.log_every_n_steps=1", *extra]


def test_fit_writes_checkpoint_directory_and_resumes_from_last(synthetic_stores, tmp_path):
    run = vla_stack(fit_args(synthetic_stores, "--trainer.max_steps=2"), tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    pretrained = tmp_path / "runs/vla_tiny/pretrained"
    assert {p.name for p in pretrained.iterdir()} >= {"config.json", "model.safetensors", "embodiments.yaml",
                                                        "norm_stats.json", "tokenizer"}
    last = tmp_path / "runs/vla_tiny/checkpoints/last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 2
    resumed = vla_stack(fit_args(synthetic_stores, "--trainer.max_steps=4", "--ckpt_path=last"), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restoring states from the checkpoint path" in resumed.stderr + resumed.stdout
    assert torch.load(last, weights_only=False)["global_step"] == 4
    from components.policy import Policy
    assert sorted(Policy.from_pretrained(pretrained).embodiments) == ["fetch", "wheeled"]
    for command, expected in (("validate", "val/loss"), ("test", "test/loss")):
        args = fit_args(synthetic_stores, f"--ckpt_path={last}", "--trainer.limit_val_batches=1",
                        "--trainer.limit_test_batches=1")
        run = vla_stack([command, *args[1:]], tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
        assert expected in run.stdout
    predict = vla_stack(["predict", *fit_args(synthetic_stores, f"--ckpt_path={last}",
                                              "--trainer.limit_predict_batches=1")[1:]], tmp_path)
    assert predict.returncode == 0, predict.stderr[-3000:]


def test_fit_runs_two_steps_of_ddp_on_cpu(synthetic_stores, tmp_path):
    run = vla_stack(fit_args(synthetic_stores, "--trainer.max_steps=2", "--trainer.strategy=ddp",
                             "--trainer.devices=2", "--trainer.accelerator=cpu"), tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "distributed_backend=gloo" in run.stderr + run.stdout
    assert "MEMBER: 2/2" in run.stderr + run.stdout
    assert torch.load(tmp_path / "runs/vla_tiny/checkpoints/last.ckpt", weights_only=False)["global_step"] == 2


def test_missing_dataset_is_a_clear_error(tmp_path):
    run = vla_stack(["fit", *CONFIG, '--data.datasets=[{"path": "nowhere.zarr"}]',
                     "--trainer.max_steps=1"], tmp_path)
    assert run.returncode != 0
    assert "data.datasets: episode store 'nowhere.zarr' does not exist" in run.stderr


def test_the_shipped_recipe_resolves_over_base_to_its_26_shares(tmp_path):
    run = vla_stack(["fit", "--config", str(TRAIN / "base.yaml"), "--config", str(TRAIN / "generalist_tiny.yaml"),
                     "--print_config"], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    config = yaml.safe_load(run.stdout)
    datasets = config["data"]["datasets"]
    assert (len(datasets), sum(len(d["oversample"]) for d in datasets)) == (10, 16)  # stage 10 as trained: 26 shares
    assert config["trainer"]["max_steps"] == 8500 and config["data"]["batch_size"] == 16  # overlay and base
    assert config["model"]["init_from"] == "runs/g17/pretrained" and config["seed_everything"] == 0


def test_adding_a_state_input_leaves_every_other_embodiment_bit_identical(tiny_checkpoint, tmp_path):
    """Stage 11's recipe: a new embodiment (wheeled_nav: wheeled + a subgoal state) fitted into a trained
    checkpoint by training only a slot adapter on its new slots."""
    import numpy as np
    from safetensors.torch import load_file

    from components.action_space import slot_indices
    from components.embodiment import Embodiments
    from components.normalization import load_stats
    from components.policy import Policy
    from components.synthetic import make_synthetic_store

    from components.training import export_pretrained
    from components.vla import VLA

    # a "trained" base: the tiny checkpoint with its zero-initialised output layers filled (a fresh
    # model's zero layers would send no gradient to its inputs)
    pol = Policy.from_pretrained(tiny_checkpoint)
    vla = VLA(pol.vla.config)
    vla.load_state_dict(pol.vla.state_dict())
    torch.manual_seed(0)
    with torch.no_grad():
        for p in vla.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    tiny_checkpoint = str(export_pretrained(vla, pol.processor, tmp_path / "base"))
    store = tmp_path / "nav.zarr"
    make_synthetic_store(store, Embodiments.from_config_dir(["wheeled_nav"])["wheeled_nav"], episodes=3, steps=12, seed=5)
    datasets = json.dumps([{"path": str(store), "weight": 1.0}])
    run = vla_stack(["fit", *CONFIG, f"--data.datasets={datasets}", "--data.batch_size=4", "--data.num_workers=0",
                     "--trainer.limit_val_batches=0", "--trainer.max_steps=3", f"--data.base={tiny_checkpoint}",
                     "--data.share_stats={wheeled_nav: wheeled}", f"--model.init_from={tiny_checkpoint}",
                     "--model.freeze_backbone=true", "--model.overrides={decoder: {slot_adapter: [wp_x, wp_y, wp_cos, wp_sin]}}",
                     "--model.train_only=[decoder.slot_adapter]",
                     "--model.lr=0.05", "--model.warmup_steps=0"], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "runs/vla_tiny/pretrained"
    base = Policy.from_pretrained(tiny_checkpoint)
    new = Policy.from_pretrained(out)
    assert sorted(new.embodiments) == sorted(base.embodiments + ["wheeled_nav"])
    old_stats, stats = load_stats(Path(tiny_checkpoint) / "norm_stats.json"), load_stats(out / "norm_stats.json")
    for name in base.embodiments:  # the base's statistics, unchanged
        for key in old_stats[name]:
            np.testing.assert_array_equal(stats[name][key].q01, old_stats[name][key].q01)
    np.testing.assert_array_equal(stats["wheeled_nav"]["action"].q99, old_stats["wheeled"]["action"].q99)
    v = slot_indices(["base_vx"])
    np.testing.assert_array_equal(stats["wheeled_nav"]["state"].q99[v], old_stats["wheeled"]["state"].q99[v])
    a, b = load_file(str(Path(tiny_checkpoint) / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # every base weight as it was
    added = sorted(set(b) - set(a))
    assert added and all(k.startswith("decoder.slot_adapter.") for k in added)
    assert b[added[-1]].any()  # the adapter's zero-initialised last layer trained
    spec = base.processor.embodiments["fetch"]
    obs = {"images": {c.name: np.full((c.height, c.width, 3), 90, np.uint8) for c in spec.cameras},
           "state": np.zeros(spec.state_dim, np.float32)}
    np.testing.assert_array_equal(base.sample(obs, "fetch", "reach the red dot", seed=1),
                                  new.sample(obs, "fetch", "reach the red dot", seed=1))
    nav = new.processor.embodiments["wheeled_nav"]
    obs = {"images": {c.name: np.full((c.height, c.width, 3), 90, np.uint8) for c in nav.cameras},
           "state": np.array([0.3, 0.0, 2.0, 1.0, 0.89, 0.45], np.float32)}
    assert new.sample(obs, "wheeled_nav", "go to the kitchen", seed=1).shape == (1, 8, 4)


def test_training_the_motion_adapter_alone_leaves_every_other_embodiment_bit_for_bit(tiny_checkpoint, synthetic_stores,
                                                                                     tmp_path):
    """configs/train/video_tiny.yaml's recipe on synthetic data: the video embodiment gets a motion adapter
    (components/dit.py); the robots' weights and actions stay as they were."""
    import numpy as np
    from safetensors.torch import load_file

    from components.policy import Policy
    from components.training import export_pretrained
    from components.vla import VLA

    pol = Policy.from_pretrained(tiny_checkpoint)
    vla = VLA(pol.vla.config)
    vla.load_state_dict(pol.vla.state_dict())
    torch.manual_seed(0)
    with torch.no_grad():  # a "trained" base: its zero-initialised output layers filled
        for p in vla.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    base_dir = str(export_pretrained(vla, pol.processor, tmp_path / "base"))
    datasets = json.dumps([{"path": synthetic_stores["video"], "weight": 1.0}])
    run = vla_stack(["fit", *CONFIG, f"--data.datasets={datasets}", "--data.batch_size=4", "--data.num_workers=0",
                     "--trainer.limit_val_batches=0", "--trainer.max_steps=3", f"--data.base={base_dir}",
                     f"--model.init_from={base_dir}", "--model.freeze_backbone=true",
                     "--model.overrides={decoder: {motion_adapter: [front, past]}}",
                     "--model.train_only=[decoder.motion_adapter]", "--model.lr=0.05", "--model.warmup_steps=0"],
                    tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "runs/vla_tiny/pretrained"
    a, b = load_file(str(Path(base_dir) / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # every base weight as it was
    added = sorted(set(b) - set(a))
    assert added and all(k.startswith("decoder.motion_adapter.") for k in added)
    assert b["decoder.motion_adapter.out.weight"].any()  # the zero-initialised last layer trained
    base, new = Policy.from_pretrained(base_dir), Policy.from_pretrained(out)
    for name in ("fetch", "wheeled", "aloha"):
        spec = base.processor.embodiments[name]
        obs = {"images": {c.name: np.full((c.height, c.width, 3), 90, np.uint8) for c in spec.cameras},
               "state": np.zeros(spec.state_dim, np.float32)}
        np.testing.assert_array_equal(base.sample(obs, name, "go", seed=1), new.sample(obs, name, "go", seed=1))
    spec = base.processor.embodiments["video"]
    rng = np.random.default_rng(0)
    obs = {"images": {c.name: rng.integers(0, 255, (c.height, c.width, 3), dtype=np.uint8) for c in spec.cameras}}
    assert np.abs(base.sample(obs, "video", "go", seed=1) - new.sample(obs, "video", "go", seed=1)).max() > 1e-4
