"""Checkpoint directories on disk: replaced in one atomic step, and read with errors that name the file.

Every writer of a directory that a loader reads whole (the policy checkpoint that ``fit`` and
``export`` write, and the world-model checkpoints to come) goes through :func:`replace_directory`,
so a reader finds the previous directory or the new one, never half of one. Loaders wrap each
file they parse in :func:`reading`, so a truncated or edited file is reported as that file.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from components.errors import CheckpointError, CheckpointNotFoundError, VLAStackError

#: what ``VLA.save_pretrained`` and ``VLAProcessor.save`` write: what ``Policy.from_pretrained`` reads
POLICY_FILES = ("config.json", "model.safetensors", "embodiments.yaml", "norm_stats.json", "tokenizer")
#: what a loaded tokenizer folder needs: its config, the image processor's, and the vocabulary
#: (``tokenizer.json``, or the ``vocab.json`` + ``merges.txt`` of a slow Qwen tokenizer)
TOKENIZER_FILES = ("tokenizer_config.json", "preprocessor_config.json")
TOKENIZER_VOCAB = ("tokenizer.json", "vocab.json")
RECOVER = ("copy the checkpoint directory again, or write it again (`vla-stack fit` exports to "
           "model.export_dir, `vla-stack export --out DIR`)")
_PARTIAL = "partial"


def require_files(directory: str | Path, files: tuple[str, ...] = POLICY_FILES) -> Path:
    """``directory`` once it is a directory holding ``files``; otherwise a CheckpointNotFoundError
    that says what is missing and what a checkpoint directory holds."""
    directory = Path(directory)
    expected = f"a checkpoint directory holds {', '.join(POLICY_FILES)}"
    if not directory.exists():
        raise CheckpointNotFoundError(f"checkpoint directory '{directory}' does not exist ({expected})")
    if not directory.is_dir():
        raise CheckpointNotFoundError(f"'{directory}' is a file, not a checkpoint directory ({expected})")
    present = sorted(p.name for p in directory.iterdir())
    missing = [f for f in files if not (directory / f).exists()]
    if missing:
        found = f"it has {', '.join(present)}; {expected}" if present else "it is empty"
        raise CheckpointNotFoundError(f"'{directory}' is not a VLA checkpoint directory: no {', '.join(missing)} "
                                      f"({found}); {RECOVER}")
    return directory


def require_tokenizer(directory: str | Path) -> Path:
    """The ``tokenizer/`` folder of checkpoint ``directory``, checked to hold what loading needs
    (a folder that is absent would otherwise be looked up as a model-hub name)."""
    folder = Path(directory) / "tokenizer"
    present = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    missing = [f for f in TOKENIZER_FILES if f not in present]
    if not present & set(TOKENIZER_VOCAB):
        missing.append(" or ".join(TOKENIZER_VOCAB))
    if missing:
        raise CheckpointNotFoundError(f"{folder}: tokenizer files missing: {missing} (it has {sorted(present)}); "
                                      f"{RECOVER}")
    return folder


@contextmanager
def reading(path: str | Path, what: str) -> Iterator[None]:
    """Report any failure to parse ``path`` (``what`` it holds) as a CheckpointError naming it.

    The block should only read and parse that file: whatever goes wrong there is the file's content.
    """
    try:
        yield
    except VLAStackError:
        raise
    except KeyError as err:
        raise CheckpointError(f"{path}: {what} has no field {err.args[0]!r}; the file was edited or comes from "
                              f"another version; {RECOVER}") from err
    except Exception as err:
        raise CheckpointError(f"{path}: cannot read {what} ({type(err).__name__}: {err}); the file is truncated, "
                              f"corrupt or edited; {RECOVER}") from err


# ---- atomic replacement ---------------------------------------------------------------------------
@contextmanager
def replace_directory(target: str | Path) -> Iterator[Path]:
    """Yield an empty directory beside ``target``; when the block ends without error it takes
    ``target``'s place in one atomic rename (the old directory, if any, is deleted after).

    A writer that fails or is killed midway leaves ``target`` as it was: only a hidden
    ``.<name>.partial-<pid>-*`` folder beside it, which the next write to ``target`` removes.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{_PARTIAL}-{os.getpid()}-", dir=target.parent))
    try:
        yield tmp
        _swap_into_place(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # after the swap: the old directory


def _swap_into_place(new: Path, target: Path) -> None:
    """Put directory ``new`` at ``target``; afterwards ``new`` holds the old ``target`` (if one existed)."""
    if not target.exists():
        new.rename(target)
        return
    if _exchange(new, target):
        return
    # No atomic exchange on this system (renameat2 is Linux >= 3.15 on most local filesystems):
    # two renames, with an instant in between where nothing is at ``target``.
    old = new.with_name(new.name + ".old")
    target.rename(old)
    new.rename(target)
    old.rename(new)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (38, 22, 95):  # ENOSYS, EINVAL, EOPNOTSUPP: the kernel or filesystem cannot exchange
        return False
    raise OSError(errno, f"cannot move {a} to {b}: {os.strerror(errno)}")


def _remove_stale_partials(target: Path) -> None:
    """Delete what writers of ``target`` that no longer run left beside it."""
    for leftover in target.parent.glob(f".{target.name}.{_PARTIAL}-*"):
        pid = leftover.name[len(f".{target.name}.{_PARTIAL}-"):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
