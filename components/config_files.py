"""Where the YAML under ``configs/`` and the files under ``components/assets/`` are read from.

``configs/`` is package data under its own import name (pyproject.toml), found through the import
system, so the same files resolve from a source checkout on ``sys.path``, an editable install and
an installed wheel.
"""
from __future__ import annotations

from importlib.resources import files
from importlib.util import find_spec
from pathlib import Path

CONFIG_PACKAGE = "configs"
CONFIG_KINDS = ("embodiments", "floorplans", "model", "render", "train")


def config_path(kind: str) -> Path:
    """The directory of one kind of config file: one of ``CONFIG_KINDS``."""
    if kind not in CONFIG_KINDS:
        raise ValueError(f"unknown kind of config {kind!r}: expected one of {list(CONFIG_KINDS)}")
    spec = find_spec(CONFIG_PACKAGE)
    if spec is None or spec.submodule_search_locations is None:
        raise FileNotFoundError(
            f"vla-stack's config files (the '{CONFIG_PACKAGE}' package) are not importable: install "
            f"vla-stack (`pip install .`, or `pip install -e .` in a checkout; an editable install made "
            f"before configs/ was package data needs it again) or run from the repository root")
    # configs/ has no __init__.py (it holds YAML only), so it is a namespace package: its path lists
    # every portion in import order, plus a placeholder entry in an editable install, which
    # importlib.resources.files() of Python 3.11 rejects (python/importlib_resources#311).
    portions = [Path(p) for p in spec.submodule_search_locations if Path(p).is_dir()]
    for portion in portions:
        if (portion / kind).is_dir():
            return portion / kind
    raise FileNotFoundError(f"config directory '{kind}' not found in the '{CONFIG_PACKAGE}' package "
                            f"({[str(p) for p in portions]}): the installed vla-stack is incomplete, reinstall it")


def asset_path(name: str) -> Path:
    """A file or directory shipped under ``components/assets`` (e.g. ``default_policy``)."""
    return Path(str(files("components") / "assets" / name))
