"""The ``vla-stack`` command.

``fit | validate | test | predict`` are LightningCLI (config-driven, ``--help`` lists everything);
the other commands are plain functions turned into subcommands by jsonargparse from their
signatures, so no argument parsing is written by hand.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYGLET_HEADLESS", "true")

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def lightning_main(args: list[str]) -> None:
    from lightning.pytorch.cli import LightningCLI

    from components.datamodule import MixtureDataModule
    from components.training import VLAModule

    class VLACLI(LightningCLI):
        def add_arguments_to_parser(self, parser):
            parser.link_arguments("model.model", "data.model")

    VLACLI(VLAModule, MixtureDataModule, args=args, save_config_kwargs={"overwrite": True})


def commands() -> dict:
    from stack import bench, commands as c
    from stack.collect import collect
    from stack.runner import run
    return {"demo": c.demo, "train_demo": c.train_demo, "collect": collect, "run": run, "synth": c.synth,
            "stats": c.stats, "sample": c.sample, "export": c.export, "bench": {"policy": bench.bench_policy, "latency": bench.bench_latency}}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LIGHTNING_COMMANDS:
        lightning_main(argv)
        return
    from jsonargparse import auto_cli
    auto_cli(commands(), args=argv, as_positional=False)


if __name__ == "__main__":
    main()
