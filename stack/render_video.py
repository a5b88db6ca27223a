"""``vla-stack render-video``: rendered episodes of the ``video`` embodiment into an episode store, and
optionally each as an mp4 with its poses sidecar for ``eval-trajectory``.

Like ``collect``: episode seeds are ``seed, seed + 1, ...``; seeds already in the store are skipped, so
running the same command again completes the store to ``--episodes`` without duplicates, and a killed run
leaves whole episodes only (``EpisodeStore.append_episode`` commits atomically). What a seed renders
(scene, look, driver) is ``components.video_data``'s; the splits are ``configs/render/video.yaml``'s.
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

from components.errors import UsageError
from components.trajectory_eval import POSES_SUFFIX

#: attribute of the store's root group naming what rendered it
SOURCE_ATTR = "render_video"


def _writable(path: Path, option: str) -> None:
    """A :class:`UsageError` unless ``path`` can be created or written (its nearest existing ancestor is a writable folder)."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() and probe != path:
        raise UsageError(f"{option} {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: {probe} is not writable; choose a path you can write")


def video_name(episode) -> str:
    """``<split-free scene>_<seed>``: e.g. ``house_000012``, ``Maze_000003`` (stock ids lose MiniWorld-/-v0)."""
    scene = Path(episode.scene).stem.removeprefix("MiniWorld-").removesuffix("-v0")
    return f"{scene}_{episode.seed:06d}"


def write_video(episode, directory: Path) -> Path:
    """``directory/<name>.mp4`` (the whole drive at the control rate) and its ``<name>.poses.csv``, each atomically."""
    from stack.results import VideoWriter, write_text

    name = video_name(episode)
    write_text(episode.track().to_csv(), directory / f"{name}{POSES_SUFFIX}")
    with VideoWriter(directory / f"{name}.mp4", fps=1.0 / episode.dt_s) as writer:
        for frame in episode.rgb:
            writer.write(frame)
    return writer.path


def render_video(out: str, episodes: int, seed: int = 0, split: str = "train", floorplans: list[str] | None = None,
                 videos_dir: str | None = None, episode_steps: int = 150, config: str | None = None) -> dict:
    """Render driven camera episodes in MiniWorld (floor plans and stock scenes, varied looks and drivers) into an
    episode store of the `video` embodiment; labels are the simulator's true future poses in the camera frame.

    Args:
        out: episode store path (.zarr); created, or completed if it exists (resumes by seed).
        episodes: number of episodes the store should hold.
        seed: first episode seed (>= 0); episode i of a fresh store has seed + i.
        split: which split of the render config to draw scenes and textures from: train, or heldout (floor
            plans and textures never used in train).
        floorplans: render only these floor plans / MiniWorld-... scenes (none of another split's); default all
            of the split's.
        videos_dir: also write each episode as <scene>_<seed>.mp4 with its <scene>_<seed>.poses.csv sidecar here
            (what eval-trajectory reads).
        episode_steps: stored frames per episode (at the spec's 10 Hz); the drive goes on 4 s more for the labels.
        config: the render config (default configs/render/video.yaml).
    """
    from tqdm import tqdm

    from components.embodiment import Embodiments
    from components.episode_store import open_for_append
    from components.video_data import SEED_KEY, EpisodeRenderer, RenderConfig

    if episodes < 1:
        raise UsageError(f"--episodes must be >= 1, got {episodes}")
    if seed < 0:
        raise UsageError(f"--seed must be >= 0, got {seed}")
    out_path = Path(out)
    _writable(out_path, "--out")
    videos = Path(videos_dir) if videos_dir else None
    if videos is not None:
        _writable(videos, "--videos_dir")
    spec = Embodiments.from_config_dir(["video"])["video"]
    renderer = EpisodeRenderer(spec, RenderConfig.load(config), split, floorplans, episode_steps)
    source = {"split": split, "floorplans": floorplans or None, "episode_steps": episode_steps,
              "config": config or "configs/render/video.yaml"}
    store = open_for_append(out, spec, SOURCE_ATTR, source, "--out", "vla-stack render-video")
    stored = {int(s) for s in store.lowdim(SEED_KEY)[store.episode_ends - 1]} if store.n_episodes else set()
    if videos is not None:
        videos.mkdir(parents=True, exist_ok=True)
    candidates = (s for s in range(seed, seed + 2**31) if s not in stored)
    written, rendered, scenes, drivers = 0, 0, Counter(), Counter()
    t0 = time.perf_counter()
    bar = tqdm(total=max(episodes - store.n_episodes, 0), unit="ep", desc=f"render-video {split}", dynamic_ncols=True)
    try:
        while store.n_episodes < episodes:
            episode = renderer(next(candidates))
            rendered += len(episode.rgb)
            if videos is not None:
                write_video(episode, videos)
                with open(videos / "episodes.jsonl", "a") as index:
                    index.write(json.dumps({"video": video_name(episode) + ".mp4", **episode.describe()}) + "\n")
            store.append_episode(episode.frames, episode.instruction)
            written += 1
            scenes[episode.scene] += 1
            drivers[episode.driver] += 1
            bar.update(1)
            bar.set_postfix(frames_per_s=f"{rendered / (time.perf_counter() - t0):.0f}")
    finally:
        bar.close()
        renderer.close()
    seconds = time.perf_counter() - t0
    summary = {"out": out, "split": split, "written": written, "episodes": store.n_episodes,
               "frames": store.n_frames, "rendered_frames": rendered, "seconds": round(seconds, 2),
               "rendered_frames_per_s": round(rendered / seconds, 1) if seconds > 0 and rendered else None,
               "scenes": dict(scenes), "drivers": dict(drivers), "videos_dir": videos_dir}
    print(f"render-video {split} -> {out}: wrote {written} episodes ({store.n_episodes}/{episodes} in the store, "
          f"{store.n_frames} frames); {rendered} frames rendered in {seconds:.1f} s "
          f"({summary['rendered_frames_per_s']} frames/s); scenes {dict(scenes)}; drivers {dict(drivers)}"
          + (f"; videos in {videos_dir}" if videos_dir else ""))
    return summary
