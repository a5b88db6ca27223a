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
