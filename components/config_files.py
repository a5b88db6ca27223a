"""Where the YAML under ``configs/`` and the files under ``components/assets/`` are read from.

``configs/`` is package data under its own import name (pyproject.toml), so ``importlib.resources``
finds the same files from a source checkout on ``sys.path``, an editable install and an installed
wheel.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

CONFIG_PACKAGE = "configs"
CONFIG_KINDS = ("embodiments", "floorplans", "model", "train")


def config_path(kind: str) -> Path:
    """The directory of one kind of config file: one of ``CONFIG_KINDS``."""
    if kind not in CONFIG_KINDS:
        raise ValueError(f"unknown kind of config {kind!r}: expected one of {list(CONFIG_KINDS)}")
    try:
        root = files(CONFIG_PACKAGE)
    except ModuleNotFoundError:
        raise FileNotFoundError(
            f"vla-stack's config files (the '{CONFIG_PACKAGE}' package) are not importable: install "
            f"vla-stack (`pip install .`, or `pip install -e .` in a checkout; an editable install made "
            f"before configs/ was package data needs it again) or run from the repository root") from None
    path = Path(str(root / kind))
    if not path.is_dir():
        raise FileNotFoundError(f"config directory '{kind}' not found in the '{CONFIG_PACKAGE}' package "
                                f"({path}): the installed vla-stack is incomplete, reinstall it")
    return path


def asset_path(name: str) -> Path:
    """A file or directory shipped under ``components/assets`` (e.g. ``default_policy``)."""
    return Path(str(files("components") / "assets" / name))
