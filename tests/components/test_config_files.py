"""Config files and assets resolve through the import system, and a built wheel carries them."""
import shutil
import subprocess
import sys
import zipfile
from importlib.util import find_spec
from pathlib import Path

import pytest

from components.config_files import CONFIG_KINDS, CONFIG_PACKAGE, asset_path, config_path
from components.embodiment import Embodiments
from components.envs.floorplan import list_floorplans, load_floorplan
from components.vla import load_model_config

REPO = Path(__file__).resolve().parents[2]
PACKAGED = ["stack", "components", "planners", "world_model", "configs"]  # what the wheel installs


def _yaml_stems(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml"))


def test_every_embodiment_spec_model_preset_and_floor_plan_resolves_through_the_configs_package():
    package_dirs = [Path(p) for p in find_spec(CONFIG_PACKAGE).submodule_search_locations]
    for kind in CONFIG_KINDS:
        assert config_path(kind).parent in package_dirs
        assert _yaml_stems(config_path(kind)) == _yaml_stems(REPO / "configs" / kind) != []
    assert [s.name for s in Embodiments.from_config_dir()] == _yaml_stems(REPO / "configs" / "embodiments")
    for preset in _yaml_stems(REPO / "configs" / "model"):
        load_model_config(preset)
    assert list_floorplans() == _yaml_stems(REPO / "configs" / "floorplans")
    for name in list_floorplans():
        load_floorplan(name)
    assert (asset_path("default_policy") / "TRAINED_WITH.md").is_file()


def test_unknown_kind_of_config_names_the_kinds():
    with pytest.raises(ValueError, match=r"unknown kind of config 'robots': expected one of \['embodiments'"):
        config_path("robots")


def test_the_wheel_carries_every_config_file_and_asset(tmp_path):
    """Built from a copy of the tree, so the build leaves no build/ or egg-info in the checkout."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ["pyproject.toml", "README.md"]:
        shutil.copy(REPO / name, src / name)
    for name in PACKAGED:
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("vla_stack-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    wanted = {str(p.relative_to(REPO)) for top in ("configs", "components/assets") for p in (REPO / top).rglob("*")
              if p.is_file() and "__pycache__" not in p.parts}
    assert wanted - shipped == set()
