"""Rendered training data for the ``video`` embodiment: a seed in, one driven, rendered episode out.

    renderer = EpisodeRenderer(spec, RenderConfig.load(), split="train")
    episode = renderer(seed)   # episode.frames for the episode store, episode.rgb / episode.poses for a video

Each seed picks (``configs/render/video.yaml``, the split's pools) a scene (a floor plan of the wheeled env,
or with ``stock_fraction`` one of MiniWorld's stock scenes), a :class:`~components.envs.looks.Look`, and a
driver (``components.envs.drivers``: the expert's route, a noisy expert, the explorer, each at a drawn top
speed, some with pauses). The camera is driven at the spec's ``control_hz`` for ``steps`` frames plus the
label horizon (``chunk_horizon`` x ``waypoint_spacing_s``), so every stored frame has its whole true future:
``action[t]`` = the simulator's poses at t + 0.5 k s (k = 1..8) in the camera's ground frame at t,
(x_forward_m, y_left_m, cos, sin) (``future_waypoints``); ``images/front`` is frame t, ``images/past`` frame
t - ``past_frame_s`` (frame 0 before that), as ``components.video_io`` shows a video to the model.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from components.config_files import config_path
from components.embodiment import PAST_CAMERA, EmbodimentSpec
from components.envs.drivers import Explorer, Pauses, RouteDriver
from components.envs.looks import Look, sample_look
from components.envs.scenes import Scene, check_scene, is_stock, make_scene
from components.envs.wheeled_expert import future_waypoints
from components.errors import ConfigError, ConfigNotFoundError, UsageError, yaml_problem
from components.kinematics import WHEELED_BASE, xz_to_xy
from components.trajectory_eval import PoseTrack

DRIVERS = ("expert", "noisy_expert", "explorer")
SEED_KEY = "episode_seed"


@dataclass(frozen=True)
class Split:
    """The scenes and textures of one split (``train`` or ``heldout``) of the render config."""
    name: str
    floorplans: tuple[str, ...]
    stock_scenes: tuple[str, ...]
    stock_fraction: float
    wall_textures: tuple[str, ...]
    floor_textures: tuple[str, ...]
    ceiling_textures: tuple[str, ...]


@dataclass(frozen=True)
class RenderConfig:
    """``configs/render/video.yaml``: the splits, and the light, field-of-view and driver ranges they share."""
    splits: dict[str, Split]
    light: dict
    fov_y_deg: tuple[float, float]
    drivers: dict[str, float]
    speed_fraction: tuple[float, float]
    pause_fraction: float
    source: str = "<memory>"

    @classmethod
    def load(cls, path: str | Path | None = None) -> "RenderConfig":
        """Read the render config (default ``configs/render/video.yaml``); a malformed one is a ``ConfigError``."""
        path = Path(path) if path else config_path("render") / "video.yaml"
        if not path.is_file():
            raise ConfigNotFoundError(f"render config {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text())
            splits = {name: Split(name, *(tuple(s[k]) for k in ("floorplans", "stock_scenes")),
                                  float(s["stock_fraction"]),
                                  *(tuple(s[k]) for k in ("wall_textures", "floor_textures", "ceiling_textures")))
                      for name, s in data["splits"].items()}
            drivers = {k: float(v) for k, v in data["drivers"].items()}
            config = cls(splits, dict(data["light"]), tuple(data["fov_y_deg"]), drivers,
                         tuple(data["speed_fraction"]), float(data["pause_fraction"]), str(path))
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: invalid YAML: {yaml_problem(err)}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ConfigError(f"{path}: malformed render config ({type(err).__name__}: {err}); expected splits "
                              f"(floorplans, stock_scenes, stock_fraction, *_textures), light, fov_y_deg, drivers, "
                              f"speed_fraction, pause_fraction") from None
        unknown = sorted(set(drivers) - set(DRIVERS))
        if unknown or not sum(drivers.values()) > 0:
            raise ConfigError(f"{path}: drivers {sorted(drivers)} must be weights > 0 of {list(DRIVERS)}")
        return config

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise UsageError(f"--split: unknown split {name!r}; {self.source} has {sorted(self.splits)}")
        return self.splits[name]

    def scenes(self, split: str, floorplans: list[str] | None = None) -> tuple[list[str], list[str]]:
        """The floor plans and stock scenes a ``split`` renders: its own, or the ``floorplans`` given, which must
        not belong to another split (that would leak held-out buildings into training, or the reverse)."""
        own = self.split(split)
        if not floorplans:
            return list(own.floorplans), list(own.stock_scenes)
        plans, stock = [], []
        for name in floorplans:
            other = [s.name for s in self.splits.values() if s.name != split
                     and name in s.floorplans + s.stock_scenes]
            if other:
                raise UsageError(f"--floorplans: {name!r} belongs to split {other[0]!r} in {self.source}, not to "
                                 f"{split!r}; choose from {list(own.floorplans + own.stock_scenes)} or a new floor plan")
            (stock if is_stock(name) else plans).append(name)
        return plans, stock


@dataclass
class VideoEpisode:
    """One rendered episode: ``frames`` for ``EpisodeStore.append_episode`` (``steps`` frames), and the whole
    drive (``steps`` + the label horizon): ``rgb`` uint8 [N, H, W, 3] at ``dt_s``, ``poses`` [N, 3] (x, z, yaw)."""
    seed: int
    scene: str
    driver: str
    look: Look | None
    instruction: str
    dt_s: float
    frames: dict = field(repr=False)
    rgb: np.ndarray = field(repr=False)
    poses: np.ndarray = field(repr=False)

    @property
    def steps(self) -> int:
        return len(self.frames["action"])

    def track(self) -> PoseTrack:
        """The true camera poses of the whole drive as a poses sidecar track (planar "xy", t_s = k dt_s)."""
        xy = xz_to_xy(self.poses)
        return PoseTrack(np.arange(len(xy)) * self.dt_s, xy[:, :2], np.unwrap(xy[:, 2]))

    def describe(self) -> dict:
        return {"seed": self.seed, "scene": self.scene, "driver": self.driver, "steps": self.steps,
                "look": self.look.describe() if self.look else None}


class EpisodeRenderer:
    """Seeds -> :class:`VideoEpisode` of the ``video`` embodiment ``spec`` in one ``split``; scenes are built once
    and kept (one OpenGL context each)."""

    def __init__(self, spec: EmbodimentSpec, config: RenderConfig, split: str = "train",
                 floorplans: list[str] | None = None, steps: int = 150):
        if steps < 1:
            raise UsageError(f"--episode_steps must be >= 1, got {steps}")
        if PAST_CAMERA not in spec.camera_names or not spec.past_frame_s or not spec.waypoint_spacing_s:
            raise UsageError(f"embodiment {spec.name!r} ({spec.source}) needs cameras [front, {PAST_CAMERA}], "
                             f"past_frame_s and waypoint_spacing_s to be rendered as video")
        self.spec, self.config, self.split_name, self.steps = spec, config, split, steps
        self.split = config.split(split)
        self.floorplans, self.stock = config.scenes(split, floorplans)
        if not self.floorplans and not self.stock:
            raise UsageError(f"--split {split}: no floor plan or scene to render")
        self.dt_s = 1.0 / spec.control_hz
        self.stride = round(spec.waypoint_spacing_s / self.dt_s)
        self.past_steps = round(spec.past_frame_s / self.dt_s)
        camera = spec.cameras[0]
        self.image_size = (camera.height, camera.width)
        self._scenes: dict[str, Scene] = {}
        for name in self.floorplans + self.stock:  # unknown scenes fail now, not at their first episode
            check_scene(name)

    def scene(self, name: str) -> Scene:
        if name not in self._scenes:
            self._scenes[name] = make_scene(name, self.image_size)
            self._scenes[name].dt_s = self.dt_s
        return self._scenes[name]

    def _choose(self, rng: np.random.Generator) -> tuple[Scene, Look, str]:
        stock = bool(self.stock) and (not self.floorplans or rng.uniform() < self.split.stock_fraction)
        names = self.stock if stock else self.floorplans
        scene = self.scene(names[int(rng.integers(len(names)))])
        c, s = self.config, self.split
        textures = () if stock else (s.wall_textures, s.floor_textures, s.ceiling_textures)
        look = sample_look(rng, c.light, c.fov_y_deg, scene.rooms, *textures)
        kinds, weights = zip(*c.drivers.items())
        driver = "explorer" if stock else str(rng.choice(kinds, p=np.array(weights) / sum(weights)))
        return scene, look, driver

    def _driver(self, kind: str, scene: Scene, rng: np.random.Generator):
        speed = WHEELED_BASE.v_max * rng.uniform(*self.config.speed_fraction)
        if kind == "explorer":
            driver = Explorer(rng, speed)
        else:
            driver = RouteDriver(scene, rng, speed, noise=rng.uniform(0.2, 0.5) if kind == "noisy_expert" else 0.0)
        return Pauses(driver, rng) if rng.uniform() < self.config.pause_fraction else driver

    def __call__(self, seed: int) -> VideoEpisode:
        rng = np.random.default_rng([seed, zlib.crc32(self.split_name.encode())])
        scene, look, kind = self._choose(rng)
        pose = scene.reset(seed, look)
        driver = self._driver(kind, scene, rng)
        rgb, depth = scene.observe()
        frames, poses = [rgb], [pose]
        for _ in range(self.steps - 1 + self.spec.chunk_horizon * self.stride):
            rgb, depth, pose, _ = scene.step(*driver(pose, depth))
            frames.append(rgb)
            poses.append(pose)
        rgb, poses = np.stack(frames), np.stack(poses)
        t = np.arange(self.steps)
        labels = np.stack([future_waypoints(poses, i, num=self.spec.chunk_horizon, stride=self.stride) for i in t])
        store_frames = {
            "action": labels,
            "state": np.zeros((self.steps, 0), np.float32),
            "images": {self.spec.cameras[0].name: rgb[t], PAST_CAMERA: rgb[np.maximum(t - self.past_steps, 0)]},
            "pose": poses[t],
            SEED_KEY: np.full(self.steps, seed, np.int64),
        }
        instruction = self.spec.instruction or self.spec.notes
        return VideoEpisode(seed, scene.name, kind, look, instruction, self.dt_s, store_frames, rgb, poses)

    def close(self) -> None:
        for scene in self._scenes.values():
            scene.close()
        self._scenes.clear()
