"""The ``vla-stack`` command.

``fit | validate | test | predict`` are LightningCLI (config-driven, ``--help`` lists everything);
the other commands are plain functions turned into subcommands by jsonargparse from their
signatures, so no argument parsing is written by hand.

Every command runs inside one error boundary (:func:`main`): a user error (a
:class:`~components.errors.VLAStackError`) prints ``vla-stack <command>: error: <message>`` and
exits 2, without a traceback; anything else is a bug in vla-stack and shows its traceback. ``--debug``
(before or after the command) or ``VLA_STACK_DEBUG=1`` shows the traceback of user errors too.
"""
from __future__ import annotations

import os
import sys
import traceback

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYGLET_HEADLESS", "true")

#: the LightningCLI commands and what each does (for the command list of ``vla-stack --help``)
LIGHTNING_COMMANDS = {
    "fit": "Train the VLA, or a world model, on episode stores (a training config: configs/train/*.yaml); writes a "
           "checkpoint directory.",
    "validate": "Validation loss of a Lightning checkpoint (--ckpt_path) on the configured data.",
    "test": "Test loss of a Lightning checkpoint (--ckpt_path) on the configured data.",
    "predict": "Sampled action chunks of a Lightning checkpoint (--ckpt_path) beside the recorded ones.",
}
DEBUG_FLAG = "--debug"
DEBUG_ENV = "VLA_STACK_DEBUG"
USER_ERROR_EXIT = 2  # what argparse and jsonargparse exit with for a bad argument
BUG_EXIT = 1


def config_files(args: list[str]) -> list[str]:
    """The ``--config`` files named in ``args`` (``--config X`` or ``--config=X``)."""
    files = [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    return files + [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"]


def is_world_model_config(args: list[str]) -> bool:
    """Whether the training config names its module by ``class_path`` (the world model:
    configs/train/world_model_tiny.yaml; the progress scorer: progress_tiny.yaml); the VLA configs give
    the VLAModule's arguments directly."""
    import yaml
    for path in config_files(args):
        try:
            with open(path) as f:
                model = (yaml.safe_load(f) or {}).get("model")
        except (OSError, yaml.YAMLError, AttributeError):
            continue  # LightningCLI reports an unreadable config itself
        if isinstance(model, dict) and "class_path" in model:
            return True
    return any(a.startswith("--model.class_path") for a in args)


def lightning_main(args: list[str]) -> None:
    import warnings

    from lightning.pytorch.cli import LightningCLI

    # the arguments are given on purpose (main() has taken --debug out of them)
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    if is_world_model_config(args):
        # any LightningModule / LightningDataModule by class_path: the world model, the progress scorer
        LightningCLI(None, None, subclass_mode_model=True, subclass_mode_data=True,
                     args=args, save_config_kwargs={"overwrite": True})
        return

    from components.datamodule import MixtureDataModule
    from components.training import VLAModule

    class VLACLI(LightningCLI):
        def add_arguments_to_parser(self, parser):
            parser.link_arguments("model.model", "data.model")
            parser.link_arguments("model.overrides", "data.model_overrides")

    VLACLI(VLAModule, MixtureDataModule, args=args, save_config_kwargs={"overwrite": True})


def _listed_only(command: str, summary: str):
    """A stand-in that puts a LightningCLI command in the command list of ``vla-stack --help``;
    :func:`main` hands these commands to LightningCLI before jsonargparse sees them."""
    def listed() -> None:
        lightning_main([command, "--help"])
    listed.__doc__ = summary
    return listed


def commands() -> dict:
    from stack import bench, commands as c
    from stack.ablate import ablate
    from stack.collect import collect
    from stack.lerobot_import import import_lerobot
    from stack.nav import floorplans, map as map_building, nav, route
    from stack.render_video import render_video
    from stack.runner import run
    from stack.serve import serve
    from stack.trajectory import eval_trajectory, predict_trajectory
    return {**{name: _listed_only(name, summary) for name, summary in LIGHTNING_COMMANDS.items()},
            "demo": c.demo, "train_demo": c.train_demo, "collect": collect, "import-lerobot": import_lerobot, "run": run, "ablate": ablate,
            "serve": serve, "synth": c.synth,
            "stats": c.stats, "sample": c.sample, "export": c.export,
            "eval-world-model": c.eval_world_model,
            "calibrate-surprise": c.calibrate_surprise, "map": map_building, "route": route, "nav": nav,
            "floorplans": floorplans,
            "predict-trajectory": predict_trajectory, "eval-trajectory": eval_trajectory,
            "render-video": render_video,
            "bench": {"policy": bench.bench_policy, "latency": bench.bench_latency, "serve": bench.bench_serve,
                      "decide": bench.bench_decide, "route": bench.bench_route}}


#: commands whose first positional argument stands for an option (``import-lerobot DIR`` = ``--dataset DIR``)
POSITIONAL = {"import-lerobot": "--dataset", "predict-trajectory": "--video"}


def with_positional(argv: list[str]) -> list[str]:
    """``COMMAND VALUE ...`` → ``COMMAND --option VALUE ...`` for the commands in :data:`POSITIONAL`."""
    if len(argv) > 1 and argv[0] in POSITIONAL and not argv[1].startswith("-"):
        return [argv[0], POSITIONAL[argv[0]], *argv[1:]]
    return argv


def dispatch(argv: list[str]) -> None:
    """Run the command that ``argv`` names (no error handling: :func:`main` does that)."""
    argv = with_positional(argv)
    if argv and argv[0] in LIGHTNING_COMMANDS:
        lightning_main(argv)
        return
    from jsonargparse import auto_cli
    auto_cli(commands(), args=argv, as_positional=False, prog="vla-stack",
             description=f"vla-stack: one VLA for many robots. `vla-stack COMMAND --help` lists a command's "
                         f"options; {DEBUG_FLAG} (or {DEBUG_ENV}=1) shows the traceback of an error.")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = with_positional([a for a in argv if a != DEBUG_FLAG])
    words = [] if not argv else argv[:next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))]
    where = " ".join(["vla-stack", *words])
    from components.errors import VLAStackError
    try:
        dispatch(argv)
    except VLAStackError as err:
        if debug:
            traceback.print_exc()
        print(f"{where}: error: {user_message(err)}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        traceback.print_exc()
        print(f"{where}: internal error ({type(err).__name__}): this is a bug in vla-stack, not in your input; "
              f"please report it with the command line and the traceback above", file=sys.stderr)
        sys.exit(BUG_EXIT)


def user_message(err: BaseException) -> str:
    """The message of a user error as one paragraph, without the worker traceback that a DataLoader
    worker adds when it re-raises an error in the main process (``Caught X in DataLoader worker
    ... Original Traceback``)."""
    text = str(err)
    if "\nOriginal Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        text = last.split(": ", 1)[1] if last.startswith(f"{type(err).__module__}.{type(err).__name__}: ") else last
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


if __name__ == "__main__":
    main()
