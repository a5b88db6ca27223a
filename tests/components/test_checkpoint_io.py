"""Checkpoint directories are replaced in one step, and a failed or killed write leaves the old one."""
import subprocess
import sys

import pytest

from components import checkpoint_io
from components.checkpoint_io import replace_directory, require_files
from components.errors import CheckpointNotFoundError


def write(directory, text):
    (directory / "config.json").write_text(text)
    (directory / "sub").mkdir()
    (directory / "sub" / "f").write_text(text)


def contents(directory) -> dict:
    return {str(p.relative_to(directory)): p.read_text() for p in directory.rglob("*") if p.is_file()}


def test_replace_directory_swaps_the_new_one_in_and_deletes_the_old(tmp_path):
    target = tmp_path / "ckpt"
    with replace_directory(target) as new:
        write(new, "one")
    with replace_directory(target) as new:
        assert contents(target) == {"config.json": "one", "sub/f": "one"}  # the old one is there while writing
        write(new, "two")
    assert contents(target) == {"config.json": "two", "sub/f": "two"}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_a_failed_write_leaves_the_target_as_it_was(tmp_path):
    target = tmp_path / "ckpt"
    with replace_directory(target) as new:
        write(new, "one")
    with pytest.raises(RuntimeError, match="died"):
        with replace_directory(target) as new:
            (new / "config.json").write_text("half")
            raise RuntimeError("writer died")
    assert contents(target) == {"config.json": "one", "sub/f": "one"}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_what_a_dead_writer_left_is_removed_by_the_next_write(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = tmp_path / f".ckpt.partial-{int(dead.stdout)}-abc"
    leftover.mkdir()
    (leftover / "config.json").write_text("half")
    with replace_directory(tmp_path / "ckpt") as new:
        write(new, "one")
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_without_an_atomic_exchange_the_two_rename_fallback_gives_the_same_result(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint_io, "_exchange", lambda a, b: False)  # what a non-Linux system has
    target = tmp_path / "ckpt"
    for text in ("one", "two"):
        with replace_directory(target) as new:
            write(new, text)
    assert contents(target) == {"config.json": "two", "sub/f": "two"}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_require_files_says_what_is_missing_and_what_is_there(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="'.*nowhere' does not exist"):
        require_files(tmp_path / "nowhere")
    with pytest.raises(CheckpointNotFoundError, match=r"no config.json, model.safetensors.*\(it is empty\)"):
        require_files(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointNotFoundError, match=r"no model.safetensors, .* \(it has config.json;"):
        require_files(tmp_path)
