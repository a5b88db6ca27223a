"""``vla-stack import-lerobot``: a local LeRobot v3 dataset into an episode store (docs/ARCHITECTURE.md, LeRobot import).

Reads ``meta/info.json`` (codebase v3.x, features, fps), ``meta/episodes/*/*.parquet`` (which data and video
file holds each episode, and from which timestamp), ``meta/tasks``-resolved task strings, the frame parquet
files (pyarrow) and the mp4 videos (PyAV, decoded at each frame's timestamp). A map YAML says which feature
fills the embodiment's action, state and cameras. Every episode is checked against the embodiment spec (width,
declared ranges, camera names and sizes) and the store is written in a directory beside ``out`` that takes its
place in one rename, so a failed import leaves nothing behind.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from components.embodiment import EmbodimentError, EmbodimentSpec, Embodiments
from components.errors import ConfigError, ConfigNotFoundError, StoreError, StoreNotFoundError, UsageError, yaml_problem

#: root attribute of the written store naming what it was imported from
SOURCE_ATTR = "lerobot"
#: per-frame array: the frame's global ``index`` in the LeRobot dataset
INDEX_KEY = "lerobot_index"
MAP_KEYS = ("action", "state", "cameras")
FEATURE_KEYS = ("source", "slots", "index")


@dataclass(frozen=True)
class FeatureMap:
    """Which LeRobot feature fills ``key`` (action or state): ``columns[j]`` is the source column of the spec's
    slot j."""

    key: str
    source: str
    columns: tuple[int, ...] | None  # None: the source columns in the spec's slot order (widths must match)

    def apply(self, values: np.ndarray, spec: EmbodimentSpec, where: str) -> np.ndarray:
        if self.columns is None:
            spec.check_width(self.key, values.shape[-1], f"{where} feature '{self.source}'")
            return values
        if max(self.columns, default=-1) >= values.shape[-1]:
            raise EmbodimentError(f"{where}: feature '{self.source}' has width {values.shape[-1]} but the map takes "
                                  f"its column {max(self.columns)} for '{self.key}'")
        return values[:, list(self.columns)]


@dataclass(frozen=True)
class CameraMap:
    camera: str
    source: str
    resize: bool


@dataclass(frozen=True)
class ImportMap:
    action: FeatureMap
    state: FeatureMap | None
    cameras: tuple[CameraMap, ...]


# ------------------------------------------------------------------------------------------- the map


def load_map(path: str | Path, spec: EmbodimentSpec) -> ImportMap:
    """Parse and check the map YAML against ``spec`` (slot and camera names; no dataset needed yet)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigNotFoundError(f"--map: {path} does not exist (a YAML mapping LeRobot features to the "
                                  f"embodiment: keys {list(MAP_KEYS)})")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"--map {path}: invalid YAML ({yaml_problem(err)})") from None
    if not isinstance(raw, dict) or "action" not in raw or "cameras" not in raw:
        raise ConfigError(f"--map {path}: expected a mapping with 'action' and 'cameras' (and 'state' where the "
                          f"embodiment has state slots), got {raw!r:.200}")
    unknown = sorted(set(raw) - set(MAP_KEYS))
    if unknown:
        raise ConfigError(f"--map {path}: unknown key(s) {unknown}; expected {list(MAP_KEYS)}")
    action = _feature_map(raw["action"], "action", spec, path)
    if raw.get("state") is None and spec.state_dim:
        raise ConfigError(f"--map {path}: no 'state' entry, but embodiment '{spec.name}' declares "
                          f"{spec.state_dim} state slots")
    state = None if raw.get("state") is None else _feature_map(raw["state"], "state", spec, path)
    return ImportMap(action, state, _camera_maps(raw["cameras"], spec, path))


def _feature_map(raw, key: str, spec: EmbodimentSpec, path: Path) -> FeatureMap:
    names = [s.name for s in (spec.action_slots if key == "action" else spec.state_slots)]
    where = f"--map {path}: '{key}'"
    if isinstance(raw, str):
        raw = {"source": raw}
    if not isinstance(raw, dict) or not isinstance(raw.get("source"), str):
        raise ConfigError(f"{where} must be a feature name or {{source: FEATURE, slots: [...]}} / "
                          f"{{source: FEATURE, index: [...]}}, got {raw!r}")
    unknown = sorted(set(raw) - set(FEATURE_KEYS))
    if unknown or ("slots" in raw and "index" in raw):
        raise ConfigError(f"{where}: keys are 'source' and one of 'slots' or 'index', got {sorted(raw)}")
    if "slots" in raw:  # the slot each source column fills (null: column dropped)
        slots = raw["slots"]
        if not isinstance(slots, list):
            raise ConfigError(f"{where}.slots must be a list of slot names (null drops a column), got {slots!r}")
        bad = [s for s in slots if s is not None and s not in names]
        if bad:
            raise ConfigError(f"{where}.slots names {bad}, which embodiment '{spec.name}' does not have; its "
                              f"{key} slots are {names}")
        twice = sorted({s for s in slots if s is not None and slots.count(s) > 1})
        missing = [n for n in names if n not in slots]
        if twice or missing:
            raise ConfigError(f"{where}.slots must fill each of {names} once; "
                              f"{f'missing {missing}' if missing else ''}{' ' if missing and twice else ''}"
                              f"{f'twice {twice}' if twice else ''}")
        return FeatureMap(key, raw["source"], tuple(slots.index(n) for n in names))
    if "index" in raw:  # the source column of each spec slot
        index = raw["index"]
        if not (isinstance(index, list) and all(isinstance(i, int) and i >= 0 for i in index)):
            raise ConfigError(f"{where}.index must be a list of source column numbers (>= 0), got {index!r}")
        if len(index) != len(names):
            raise EmbodimentError(f"{where}.index has {len(index)} entries but embodiment '{spec.name}' declares "
                                  f"{len(names)} {key} slots {names}")
        return FeatureMap(key, raw["source"], tuple(index))
    return FeatureMap(key, raw["source"], None)


def _camera_maps(raw, spec: EmbodimentSpec, path: Path) -> tuple[CameraMap, ...]:
    where = f"--map {path}: 'cameras'"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must map each camera of '{spec.name}' ({spec.camera_names}) to a LeRobot "
                          f"video feature, got {raw!r}")
    missing = [c for c in spec.camera_names if c not in raw]
    unknown = sorted(set(raw) - set(spec.camera_names))
    if missing or unknown:
        raise EmbodimentError(f"{where}: embodiment '{spec.name}' has cameras {spec.camera_names}; the map "
                              f"{f'misses {missing}' if missing else ''}{' and ' if missing and unknown else ''}"
                              f"{f'names unknown camera(s) {unknown}' if unknown else ''}")
    cameras = []
    for camera in spec.camera_names:
        entry = raw[camera]
        entry = {"source": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or not isinstance(entry.get("source"), str) or \
                set(entry) - {"source", "resize"}:
            raise ConfigError(f"{where}.{camera} must be a feature name or {{source: FEATURE, resize: BOOL}}, "
                              f"got {entry!r}")
        cameras.append(CameraMap(camera, entry["source"], bool(entry.get("resize", False))))
    return tuple(cameras)


# ------------------------------------------------------------------------------------------- the dataset


class LeRobotDataset:
    """A local LeRobot v3 dataset directory, read with pyarrow (frames) and PyAV (videos)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise StoreNotFoundError(f"--dataset: {self.root} is not a LeRobot dataset (no meta/info.json)")
        try:
            self.info = json.loads(info_path.read_text())
            version = str(self.info["codebase_version"])
            self.features: dict = self.info["features"]
            self.fps = float(self.info["fps"])
            self.data_path: str = self.info["data_path"]
            self.video_path: str | None = self.info.get("video_path")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise StoreError(f"{info_path}: not a LeRobot info.json ({type(err).__name__}: {err})") from None
        if not version.startswith("v3."):
            raise StoreError(f"{info_path}: codebase_version {version}; import-lerobot reads LeRobot v3.x datasets "
                             "(convert older ones with LeRobot's v2.1-to-v3.0 conversion script)")
        self.version = version
        self.episodes = self._episodes()

    def _episodes(self) -> list[dict]:
        import pyarrow.parquet as pq
        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise StoreError(f"{self.root}: no meta/episodes/chunk-*/file-*.parquet (a LeRobot v3 dataset lists its "
                             "episodes there)")
        rows = [row for f in files for row in pq.read_table(f).to_pylist()]
        return sorted(rows, key=lambda r: r["episode_index"])

    def feature(self, name: str, kinds: tuple[str, ...], what: str) -> dict:
        """The info.json entry of feature ``name``, which must be of a dtype in ``kinds``."""
        if name not in self.features:
            raise ConfigError(f"--map: {what} names feature '{name}', which {self.root} does not have; its features "
                              f"are {sorted(self.features)}")
        entry = self.features[name]
        if entry.get("dtype") not in kinds:
            raise ConfigError(f"--map: {what} names feature '{name}' of dtype {entry.get('dtype')}; expected "
                              f"{' or '.join(kinds)}")
        return entry

    def frames(self, episode: dict, columns: list[str]):
        """The episode's rows of its data file (columns plus timestamp, index), in frame order."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
        path = self.root / self.data_path.format(chunk_index=episode["data/chunk_index"],
                                                 file_index=episode["data/file_index"])
        if not path.is_file():
            raise StoreNotFoundError(f"{self.root}: episode {episode['episode_index']}'s data file {path} is missing")
        table = pq.read_table(path, columns=[*columns, "timestamp", "frame_index", "episode_index", "index"])
        table = table.filter(pc.equal(table["episode_index"], episode["episode_index"])).sort_by("frame_index")
        if table.num_rows != episode["length"]:
            raise StoreError(f"{path}: episode {episode['episode_index']} has {table.num_rows} rows; meta/episodes "
                             f"says {episode['length']}")
        return table

    def video_frames(self, key: str, episode: dict, timestamps: np.ndarray) -> np.ndarray:
        """uint8 [T, H, W, 3]: the frames of video feature ``key`` at the episode's ``timestamps`` (s)."""
        import av
        prefix = f"videos/{key}/"
        path = self.root / self.video_path.format(video_key=key, chunk_index=episode[prefix + "chunk_index"],
                                                  file_index=episode[prefix + "file_index"])
        if not path.is_file():
            raise StoreNotFoundError(f"{self.root}: feature '{key}' of episode {episode['episode_index']}: video "
                                     f"{path} is missing")
        wanted = float(episode[prefix + "from_timestamp"]) + np.asarray(timestamps, dtype=np.float64)
        tolerance = 0.25 / self.fps
        times, images = [], []
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            container.seek(max(int((wanted[0] - tolerance) / stream.time_base), 0), stream=stream, backward=True)
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base)
                if t > wanted[-1] + tolerance:
                    break
                if t >= wanted[0] - tolerance:
                    times.append(t)
                    images.append(frame.to_ndarray(format="rgb24"))
        times = np.asarray(times)
        if not len(times):
            raise StoreError(f"{path}: no frame of feature '{key}' near {wanted[0]:.3f} s (episode "
                             f"{episode['episode_index']})")
        nearest = np.abs(times[None, :] - wanted[:, None]).argmin(axis=1)
        off = np.abs(times[nearest] - wanted)
        if (off > tolerance).any():
            i = int(off.argmax())
            raise StoreError(f"{path}: feature '{key}' has no frame within {tolerance * 1e3:.1f} ms of {wanted[i]:.4f} s "
                             f"(episode {episode['episode_index']}, frame {i}); the video and the parquet disagree")
        return np.stack([images[i] for i in nearest])


# ------------------------------------------------------------------------------------------- the command


def _lowdim(table, feature: FeatureMap, spec: EmbodimentSpec, where: str) -> np.ndarray:
    values = np.asarray(table[feature.source].to_pylist(), dtype=np.float32)
    if values.ndim != 2:
        raise EmbodimentError(f"{where}: feature '{feature.source}' is not a vector per frame (shape {values.shape})")
    mapped = feature.apply(values, spec, where)
    spec.check_range(feature.key, mapped, f"{where} feature '{feature.source}'")
    return mapped


def _episode(dataset: LeRobotDataset, episode: dict, mapping: ImportMap, spec: EmbodimentSpec) -> tuple[dict, str]:
    """One LeRobot episode as an episode-store episode and its instruction, checked against ``spec``."""
    from components.processor import resize_image
    where = f"{dataset.root} episode {episode['episode_index']}"
    lowdim = [mapping.action] + ([mapping.state] if mapping.state else [])
    table = dataset.frames(episode, sorted({f.source for f in lowdim}))
    action = _lowdim(table, mapping.action, spec, where)
    state = (_lowdim(table, mapping.state, spec, where) if mapping.state
             else np.zeros((len(action), 0), np.float32))
    timestamps = np.asarray(table["timestamp"].to_pylist(), dtype=np.float64)
    images = {}
    for camera, declared in zip(mapping.cameras, spec.cameras):
        frames = dataset.video_frames(camera.source, episode, timestamps)
        size = (declared.height, declared.width)
        if frames.shape[1:3] != size:
            if not camera.resize:
                raise EmbodimentError(f"{where}: feature '{camera.source}' is {frames.shape[1]}x{frames.shape[2]} but "
                                      f"camera '{camera.camera}' of embodiment '{spec.name}' ({spec.source}) is "
                                      f"{size[0]}x{size[1]}; set `resize: true` for it in the map to resize")
            frames = np.stack([resize_image(f, *size) for f in frames])
        images[camera.camera] = frames
    tasks = list(episode.get("tasks") or [])
    if len(tasks) != 1:
        raise StoreError(f"{where}: has tasks {tasks}; an episode store keeps one instruction per episode")
    frames = {"action": action, "state": state, "images": images,
              INDEX_KEY: np.asarray(table["index"].to_pylist(), dtype=np.int64)}
    return frames, str(tasks[0])


def import_lerobot(dataset: str, embodiment: str, map: str, out: str, overwrite: bool = False) -> dict:
    """Import a local LeRobot v3 dataset (meta/info.json, parquet frames, mp4 videos) into an episode store.

    The map YAML names the feature for the embodiment's action, state and each camera (docs/ARCHITECTURE.md,
    LeRobot import). Widths, declared ranges, camera names and sizes are checked for every episode; the store is
    written beside ``out`` and renamed into place at the end, so a failed import leaves nothing.

    Args:
        dataset: the LeRobot dataset's root directory (holding meta/, data/, videos/).
        embodiment: embodiment name (configs/embodiments), e.g. aloha.
        map: YAML mapping LeRobot features to the embodiment's action/state slots and cameras.
        out: episode store path (``.zarr``) to create.
        overwrite: replace ``out`` if it exists.
    """
    from components.checkpoint_io import replace_directory
    from components.episode_store import EpisodeStore
    import zarr

    spec = Embodiments.from_config_dir([embodiment])[embodiment]
    mapping = load_map(map, spec)
    source = LeRobotDataset(dataset)
    for feature in [mapping.action] + ([mapping.state] if mapping.state else []):
        source.feature(feature.source, ("float32", "float64"), f"'{feature.key}'")
    for camera in mapping.cameras:
        source.feature(camera.source, ("video",), f"camera '{camera.camera}'")
    if source.fps != spec.control_hz:
        raise EmbodimentError(f"--dataset {dataset}: recorded at {source.fps:g} fps but embodiment '{spec.name}' "
                              f"({spec.source}) runs at {spec.control_hz:g} Hz; its chunks would span another time")
    if Path(out).exists() and not overwrite:
        raise UsageError(f"--out: {out} already exists; choose another path or pass --overwrite true")
    frames = 0
    with replace_directory(out) as tmp:
        store = EpisodeStore.create(tmp, embodiment=spec.name, fps=spec.control_hz, cameras=spec.camera_names,
                                    overwrite=True)
        zarr.open_group(str(tmp), mode="r+").attrs[SOURCE_ATTR] = {
            "dataset": str(Path(dataset).resolve()), "codebase_version": source.version,
            "map": str(Path(map).resolve())}
        store = EpisodeStore.open(tmp, mode="a")
        for episode in source.episodes:
            data, instruction = _episode(source, episode, mapping, spec)
            store.append_episode(data, instruction)
            frames += len(data["action"])
    print(f"wrote {out}: {len(source.episodes)} episodes, {frames} frames ({spec.name}) from {dataset}")
    return {"out": str(out), "episodes": len(source.episodes), "frames": frames, "embodiment": spec.name}
