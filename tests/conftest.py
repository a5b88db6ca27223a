"""Shared fixtures: tiny synthetic stores for every embodiment and a randomly initialised tiny
checkpoint built from them (the real save/load path, no training)."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYGLET_HEADLESS", "true")
torch.set_num_threads(2)

EMBODIMENTS = ["aloha", "fetch", "video", "wheeled"]


@pytest.fixture(scope="session")
def synthetic_stores(tmp_path_factory) -> dict[str, str]:
    from components.embodiment import Embodiments
    from components.synthetic import make_synthetic_store
    root = tmp_path_factory.mktemp("stores")
    specs = Embodiments.from_config_dir()
    out = {}
    for i, name in enumerate(EMBODIMENTS):
        path = root / f"{name}.zarr"
        make_synthetic_store(path, specs[name], episodes=3, steps=12, seed=i)
        out[name] = str(path)
    return out


@pytest.fixture(scope="session")
def datamodule(synthetic_stores):
    from components.datamodule import DatasetEntry, MixtureDataModule
    dm = MixtureDataModule([DatasetEntry(p) for p in synthetic_stores.values()], batch_size=4, num_workers=0)
    dm.setup("fit")
    return dm


@pytest.fixture(scope="session")
def tiny_checkpoint(datamodule, tmp_path_factory) -> str:
    from components.training import export_pretrained
    from components.vla import VLA, load_model_config
    torch.manual_seed(0)
    vla = VLA(load_model_config("tiny"))
    return str(export_pretrained(vla, datamodule.processor, tmp_path_factory.mktemp("ckpt") / "pretrained"))


@pytest.fixture(scope="session")
def policy(tiny_checkpoint):
    from components.policy import Policy
    return Policy.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="session")
def subgoal_checkpoint(synthetic_stores, tmp_path_factory) -> str:
    """A tiny checkpoint of every embodiment plus wheeled_nav (the base with a subgoal in its state)
    and the slot adapter on the subgoal's slots: what the shipped default has since stage 11."""
    from components.datamodule import DatasetEntry, MixtureDataModule
    from components.embodiment import Embodiments
    from components.synthetic import make_synthetic_store
    from components.training import export_pretrained
    from components.vla import VLA, load_model_config
    root = tmp_path_factory.mktemp("subgoal")
    make_synthetic_store(root / "wheeled_nav.zarr", Embodiments.from_config_dir()["wheeled_nav"], episodes=2,
                         steps=10, seed=len(EMBODIMENTS))
    stores = [*synthetic_stores.values(), str(root / "wheeled_nav.zarr")]
    dm = MixtureDataModule([DatasetEntry(p) for p in stores], batch_size=2, num_workers=0)
    dm.setup("fit")
    torch.manual_seed(0)
    vla = VLA(load_model_config("tiny", {"decoder": {"slot_adapter": ["wp_x", "wp_y", "wp_cos", "wp_sin"]}}))
    return str(export_pretrained(vla, dm.processor, root / "pretrained"))
