"""Episode store: one zarr v3 group holding one dataset of one embodiment.

Layout (T = total frames over all committed episodes, E = number of episodes)::

    data/action            float32 [T, A]  or [T, H, A] (a precomputed chunk per frame)
    data/state             float32 [T, S]
    data/images/<camera>   uint8   [T, Hc, Wc, 3]   (zstd level 3, 100 frames per chunk)
    data/<key>             any extra per-frame array, e.g. depth float32, pose float64
    meta/episode_ends      int64   [E]   cumulative end index of each episode
    attrs: embodiment, fps, cameras, instructions (one per episode), format_version

Crash safety: an episode becomes visible only when its end index is written to
``meta/episode_ends``, which is the last write of ``append_episode``. Rows past the last
end, and instructions past the last episode, are leftovers of a killed writer: readers
never look at them and a writer truncates them before appending. Every file write of
zarr's LocalStore is atomic (temp file + rename), so each step either happened or not.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from components.errors import StoreError, StoreNotFoundError

FORMAT_VERSION = 1
IMAGE_CHUNK_FRAMES = 100
_LOWDIM_KEYS = ("action", "state")
_RESERVED_KEYS = ("instruction",)


def _frames_per_chunk(key: str, row_bytes: int) -> int:
    """Images: 100 frames per chunk. Others: about 1 MiB per chunk, 100..10_000 frames."""
    if key.startswith("images/"):
        return IMAGE_CHUNK_FRAMES
    return int(np.clip((1 << 20) // max(row_bytes, 1), 100, 10_000))


def _valid_prefix(ends: np.ndarray) -> np.ndarray:
    """Longest prefix of ``ends`` [E] that is strictly increasing from a positive value.

    A writer killed between resizing ``episode_ends`` and writing its new value leaves a
    trailing fill value (0), which this drops.
    """
    steps = np.diff(ends, prepend=0)
    bad = np.flatnonzero(steps <= 0)
    return ends[: bad[0]] if bad.size else ends


@dataclass(frozen=True)
class _Damage:
    """An unreadable chunk of ``data/<key>``: frames ``start..stop-1`` of ``episodes``."""

    key: str
    start: int
    stop: int
    episodes: list[int]
    file: str
    error: str

    def describe(self, store: str) -> str:
        return (f"episode store {store}: data/{self.key} frames {self.start}..{self.stop - 1} (episode(s) "
                f"{self.episodes}) cannot be read from {self.file} ({self.error})")


class EpisodeStore:
    """Episodes appended to, and read from, one zarr v3 group.

    Frames are addressed globally (``t`` in ``[0, n_frames)``); ``episode_ends`` [E] maps
    them to episodes. Use :meth:`create` or :meth:`open`, not the constructor.
    """

    def __init__(self, root: zarr.Group, path: str, mode: str, skip_damaged: bool = False):
        self._root = root
        self.path = path
        self._mode = mode
        self._skip_damaged = skip_damaged
        self._skipped: dict[int, str] | None = None
        attrs = root.attrs
        self.embodiment: str = attrs["embodiment"]
        self.fps: float = float(attrs["fps"])
        self.cameras: list[str] = list(attrs["cameras"])
        try:
            stored_ends = np.asarray(root["meta/episode_ends"][:], dtype=np.int64)
        except Exception as err:
            raise StoreError(f"episode store {path}: its index meta/episode_ends cannot be read ({err}); without "
                             "it no episode can be found: collect the data again into a new store") from err
        self._ends = _valid_prefix(stored_ends)
        instructions = list(attrs.get("instructions", []))
        if len(instructions) < self.n_episodes:
            raise StoreError(
                f"episode store {path}: {self.n_episodes} committed episodes but only "
                f"{len(instructions)} instructions; the store is corrupt"
            )
        self._instructions = instructions[: self.n_episodes]
        self._arrays: dict[str, zarr.Array] = {
            name[len("data/") :]: node
            for name, node in root.members(max_depth=None)
            if name.startswith("data/") and isinstance(node, zarr.Array)
        }
        for key, array in self._arrays.items():
            if array.shape[0] < self.n_frames:
                raise StoreError(
                    f"episode store {path}: data/{key} has {array.shape[0]} rows but "
                    f"episode_ends commits {self.n_frames}; the store is corrupt"
                )
        self._lowdim_cache: dict[str, np.ndarray] = {}
        if mode == "a":
            self._discard_uncommitted()

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        embodiment: str,
        fps: float,
        cameras: list[str],
        overwrite: bool = False,
    ) -> EpisodeStore:
        """Create an empty store at ``path`` and return it open for appending."""
        if not overwrite and Path(path).exists():
            raise FileExistsError(
                f"episode store {path} already exists; pass overwrite=True to replace it"
            )
        if len(set(cameras)) != len(cameras):
            raise StoreError(f"episode store {path}: duplicate camera names in {cameras}")
        root = zarr.open_group(str(path), mode="w")
        root.create_array(
            "meta/episode_ends", shape=(0,), chunks=(1024,), dtype="int64", fill_value=0
        )
        root.attrs.update(
            {
                "embodiment": embodiment,
                "fps": float(fps),
                "cameras": list(cameras),
                "instructions": [],
                "format_version": FORMAT_VERSION,
            }
        )
        return cls(root, str(path), "a")

    @classmethod
    def open(cls, path: str | Path, mode: str = "r", skip_damaged: bool = False) -> EpisodeStore:
        """Open an existing store, read-only (``"r"``) or for appending (``"a"``).

        Opening for appending discards what a killed writer left past the last episode.
        ``skip_damaged``: :meth:`lowdim` fills the rows of unreadable chunks (NaN, or 0 for
        integers) instead of raising; they belong to the episodes in :attr:`skipped`, which the
        reader then leaves out.
        """
        if mode not in ("r", "a"):
            raise StoreError(f"episode store {path}: mode must be 'r' or 'a', got {mode!r}")
        if not Path(path).exists():
            raise StoreNotFoundError(f"episode store {path} does not exist")
        try:
            root = zarr.open_group(str(path), mode="r" if mode == "r" else "r+")
        except (FileNotFoundError, ValueError) as err:
            raise StoreError(f"{path} is not an episode store (no zarr group): {err}") from err
        version = root.attrs.get("format_version")
        if version is None or "meta/episode_ends" not in root:
            raise StoreError(
                f"{path} is not an episode store (no format_version attribute or "
                "meta/episode_ends)"
            )
        if version != FORMAT_VERSION:
            raise StoreError(
                f"episode store {path} has format_version {version}; "
                f"this code reads {FORMAT_VERSION}"
            )
        return cls(root, str(path), mode, skip_damaged)

    # ------------------------------------------------------------------ properties

    @property
    def n_episodes(self) -> int:
        return len(self._ends)

    @property
    def n_frames(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def episode_ends(self) -> np.ndarray:
        """Cumulative end index of each committed episode, int64 [E]."""
        return self._ends.copy()

    @property
    def instructions(self) -> list[str]:
        return list(self._instructions)

    @property
    def keys(self) -> list[str]:
        """Per-frame array names under ``data/``, e.g. ``["action", "images/top", "state"]``."""
        return sorted(self._arrays)

    def __len__(self) -> int:
        return self.n_episodes

    def __repr__(self) -> str:
        return (
            f"EpisodeStore({self.path!r}, embodiment={self.embodiment!r}, "
            f"episodes={self.n_episodes}, frames={self.n_frames}, mode={self._mode!r})"
        )

    # ------------------------------------------------------------------ writing

    def append_episode(
        self,
        episode: Mapping,
        instruction: str,
        *,
        _before_commit: Callable[[], None] | None = None,
    ) -> int:
        """Append one episode and return its index.

        ``episode``: ``{"action": [T, A] or [T, H, A], "state": [T, S],
        "images": {camera: [T, Hc, Wc, 3] uint8}, <extra key>: [T, ...]}``.
        ``_before_commit`` is called after every data write and before the commit; tests
        use it to kill the writer at the worst moment.
        """
        if self._mode != "a":
            raise StoreError(f"episode store {self.path} is open read-only; open it with mode='a'")
        self._discard_uncommitted()
        frames = self._validate(episode)
        n_new = next(iter(frames.values())).shape[0]
        start, stop = self.n_frames, self.n_frames + n_new

        data = self._root.require_group("data")
        for key, values in frames.items():
            array = self._arrays.get(key)
            if array is None:
                row_shape = values.shape[1:]
                row_bytes = int(np.prod(row_shape, dtype=np.int64)) * values.dtype.itemsize
                array = data.create_array(
                    key,
                    shape=(0, *row_shape),
                    chunks=(_frames_per_chunk(key, row_bytes), *row_shape),
                    dtype=values.dtype,
                    compressors=ZstdCodec(level=3),
                )
                self._arrays[key] = array
            array.resize((stop, *array.shape[1:]))
            array[start:stop] = values
        self._root.attrs["instructions"] = [*self._instructions, str(instruction)]
        if _before_commit is not None:
            _before_commit()

        # The commit: the episode exists once its end index is readable.
        ends = self._root["meta/episode_ends"]
        index = self.n_episodes
        ends.resize((index + 1,))
        ends[index] = stop
        self._ends = np.append(self._ends, np.int64(stop))
        self._instructions.append(str(instruction))
        self._lowdim_cache.clear()
        return index

    def _discard_uncommitted(self) -> None:
        """Truncate everything a killed (or failed) writer left past the last commit."""
        ends = self._root["meta/episode_ends"]
        if ends.shape[0] > self.n_episodes:
            # Zero the dropped entries before shrinking: the boundary chunk keeps values
            # past the shape, and a later crash-after-resize must read 0 there, not them.
            ends[self.n_episodes :] = 0
            ends.resize((self.n_episodes,))
        if self.n_episodes == 0 and self._arrays:
            # Arrays from an uncommitted first episode must not fix the widths.
            del self._root["data"]
            self._arrays.clear()
        for array in self._arrays.values():
            if array.shape[0] != self.n_frames:
                array.resize((self.n_frames, *array.shape[1:]))
        if len(self._root.attrs.get("instructions", [])) != self.n_episodes:
            self._root.attrs["instructions"] = list(self._instructions)

    def _validate(self, episode: Mapping) -> dict[str, np.ndarray]:
        """Check one episode against the store; return flat ``{key: [T, ...]}`` arrays."""
        where = f"episode store {self.path}"
        for key in ("action", "state", "images"):
            if key not in episode:
                raise StoreError(f"{where}: episode has no {key!r} entry")
        for key in _RESERVED_KEYS:
            if key in episode:
                raise StoreError(f"{where}: {key!r} is passed as an argument, not an episode key")

        images = episode["images"]
        if not isinstance(images, Mapping):
            raise StoreError(f"{where}: 'images' must map camera name to [T, H, W, 3] uint8")
        missing = sorted(set(self.cameras) - set(images))
        undeclared = sorted(set(images) - set(self.cameras))
        if missing or undeclared:
            raise StoreError(
                f"{where}: store cameras are {self.cameras}; episode is missing {missing} "
                f"and has undeclared {undeclared}"
            )

        frames: dict[str, np.ndarray] = {}
        for key in _LOWDIM_KEYS:
            values = np.asarray(episode[key], dtype=np.float32)
            expected_ndim = (2, 3) if key == "action" else (2,)
            if values.ndim not in expected_ndim:
                raise StoreError(
                    f"{where}: {key!r} must have {' or '.join(map(str, expected_ndim))} dims, "
                    f"got shape {values.shape}"
                )
            finite = np.isfinite(values).reshape(len(values), -1).all(axis=1)
            if not finite.all():
                raise StoreError(
                    f"{where}: {key!r} has non-finite values, first at frame "
                    f"{int(np.argmin(finite))}"
                )
            frames[key] = values
        for camera in self.cameras:
            values = np.asarray(images[camera])
            if values.dtype != np.uint8 or values.ndim != 4 or values.shape[-1] != 3:
                raise StoreError(
                    f"{where}: images/{camera} must be uint8 [T, H, W, 3], "
                    f"got {values.dtype} {values.shape}"
                )
            frames[f"images/{camera}"] = values
        for key, value in episode.items():
            if key not in ("action", "state", "images"):
                values = np.asarray(value)
                if values.ndim == 0:
                    raise StoreError(f"{where}: extra key {key!r} must be per frame [T, ...]")
                frames[key] = values

        lengths = {key: values.shape[0] for key, values in frames.items()}
        if len(set(lengths.values())) != 1 or lengths["action"] == 0:
            raise StoreError(f"{where}: every array needs the same T > 0 frames, got {lengths}")

        if self._arrays:
            missing = sorted(set(self._arrays) - set(frames))
            extra = sorted(set(frames) - set(self._arrays))
            if missing or extra:
                raise StoreError(
                    f"{where}: episode keys differ from the stored ones; missing {missing}, "
                    f"not in the store {extra}"
                )
            for key, values in frames.items():
                array = self._arrays[key]
                if values.shape[1:] != array.shape[1:]:
                    raise StoreError(
                        f"{where}: {key!r} expects per-frame shape {array.shape[1:]} "
                        f"(from the first episode), got {values.shape[1:]}"
                    )
                if not np.can_cast(values.dtype, array.dtype, casting="same_kind"):
                    raise StoreError(
                        f"{where}: {key!r} is stored as {array.dtype}, got {values.dtype}"
                    )
                frames[key] = values.astype(array.dtype, copy=False)
        return frames

    # ------------------------------------------------------------------ reading

    def episode_slice(self, i: int) -> slice:
        """Global frame range of episode ``i`` (negative indices count from the end)."""
        if not -self.n_episodes <= i < self.n_episodes:
            raise IndexError(f"episode {i} out of range for {self.n_episodes} episodes")
        i %= self.n_episodes
        start = int(self._ends[i - 1]) if i > 0 else 0
        return slice(start, int(self._ends[i]))

    def episode_of(self, t: int) -> int:
        """Index of the episode holding global frame ``t``."""
        self._check_frame(t)
        return int(np.searchsorted(self._ends, t, side="right"))

    def get_episode(self, i: int) -> dict:
        """All arrays of episode ``i`` ([T_i, ...] each, images nested) plus its instruction."""
        rows = self.episode_slice(i)
        episode = self._read(rows, self.keys)
        episode["instruction"] = self._instructions[i]
        return episode

    def get_frame(self, t: int, keys: list[str] | None = None) -> dict:
        """Arrays of global frame ``t`` (``[...]`` each, images nested) plus its instruction.

        ``keys`` picks arrays by their name in :attr:`keys`, e.g. ``["state", "images/top"]``.
        """
        self._check_frame(t)
        frame = self._read(t, self.keys if keys is None else keys)
        frame["instruction"] = self._instructions[self.episode_of(t)]
        return frame

    def get_rows(self, rows: slice, keys: list[str]) -> dict:
        """Arrays ``keys`` of the global frames ``rows`` (``[n, ...]`` each, images nested): one read per
        array, for callers that go through a store in blocks."""
        start, stop, step = rows.indices(self.n_frames)
        if step != 1 or start != (rows.start or 0) or stop != (self.n_frames if rows.stop is None else rows.stop):
            raise IndexError(f"rows {rows} are not a contiguous range of the {self.n_frames} frames in {self.path}")
        return self._read(slice(start, stop), keys)

    def get_window(self, t: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """Action chunk starting at global frame ``t`` and its time mask.

        2-D actions: ``actions [horizon, A]`` taken from ``t`` onwards within t's episode,
        padded past the episode end with its last action; ``time_mask [horizon]`` bool is
        False on the padding. 3-D actions (a precomputed chunk per frame): the frame's own
        chunk ``[min(H, horizon), A]`` and an all-True mask of that length.
        """
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self._check_frame(t)
        actions = self.lowdim("action")
        if actions.ndim == 3:
            chunk = actions[t, :horizon]
            return chunk.copy(), np.ones(len(chunk), dtype=bool)
        end = int(self._ends[self.episode_of(t)])
        real = actions[t : min(t + horizon, end)]
        time_mask = np.arange(horizon) < len(real)
        padding = np.repeat(real[-1:], horizon - len(real), axis=0)
        return np.concatenate([real, padding]), time_mask

    def _check_frame(self, t: int) -> None:
        if not 0 <= t < self.n_frames:
            raise IndexError(f"frame {t} out of range for {self.n_frames} frames in {self.path}")

    def lowdim(self, key: str) -> np.ndarray:
        """Committed rows of a small array, read once and kept in memory."""
        if key not in self._lowdim_cache:
            self._lowdim_cache[key] = self._rows(key, slice(0, self.n_frames), fill=self._skip_damaged)
        return self._lowdim_cache[key]

    @property
    def skipped(self) -> dict[int, str]:
        """``{episode: why}`` that this reader leaves out: opened with ``skip_damaged``, the episodes
        with an unreadable chunk (every chunk is read once, on first use); otherwise none."""
        if self._skipped is None:
            self._skipped = self.damaged_episodes() if self._skip_damaged else {}
        return self._skipped

    def damaged_episodes(self, keys: list[str] | None = None) -> dict[int, str]:
        """``{episode: why}`` for every episode with frames in a chunk of ``keys`` (default: all
        arrays) that cannot be read. Reads each chunk once: one pass over the store."""
        damaged: dict[int, str] = {}
        for key in self.keys if keys is None else keys:
            for damage in self._damage(key, slice(0, self.n_frames)):
                for episode in damage.episodes:
                    damaged.setdefault(episode, damage.describe(self.path))
        return dict(sorted(damaged.items()))

    def _rows(self, key: str, rows: int | slice, fill: bool = False) -> np.ndarray:
        """``data/<key>[rows]``; a damaged chunk is a StoreError naming the array, frames and
        episodes (or, with ``fill``, rows of NaN / 0 in its place)."""
        array = self._arrays[key]
        try:
            return array[rows]
        except Exception as err:  # zarr/zstd report a damaged chunk as RuntimeError, ValueError, ...
            damage = self._damage(key, rows if isinstance(rows, slice) else slice(rows, rows + 1))
            if not damage:
                raise
            if not fill:
                raise StoreError(f"{damage[0].describe(self.path)}. Recover: collect these episodes again (into a "
                                 "new store with `vla-stack collect`), or leave them out: training skips damaged "
                                 "episodes, with a warning, given --data.skip_damaged_episodes=true") from err
        dtype = np.dtype(array.dtype)
        out = np.full((rows.stop - rows.start, *array.shape[1:]), np.nan if dtype.kind == "f" else 0, dtype)
        unreadable = {d.start for d in damage}
        size = array.chunks[0]
        for lo in range(rows.start - rows.start % size, rows.stop, size):
            if lo not in unreadable:
                a, b = max(lo, rows.start), min(lo + size, rows.stop)
                out[a - rows.start: b - rows.start] = array[a:b]
        return out

    def _damage(self, key: str, rows: slice) -> list[_Damage]:
        """The chunks of ``data/<key>`` overlapping ``rows`` that cannot be read."""
        array = self._arrays[key]
        size = array.chunks[0]
        start, stop = rows.start or 0, min(rows.stop, self.n_frames)
        found = []
        for chunk in range(start // size, -(-stop // size)):
            lo, hi = chunk * size, min((chunk + 1) * size, self.n_frames)
            try:
                array[lo:hi]
            except Exception as err:
                first, last = (int(np.searchsorted(self._ends, t, side="right")) for t in (lo, hi - 1))
                coords = (chunk,) + (0,) * (array.ndim - 1)
                file = Path(self.path, array.path, array.metadata.chunk_key_encoding.encode_chunk_key(coords))
                found.append(_Damage(key, lo, hi, list(range(first, last + 1)), str(file), f"{type(err).__name__}: {err}"))
        return found

    def _read(self, rows: int | slice, keys: list[str]) -> dict:
        out: dict = {}
        for key in keys:
            if key not in self._arrays:
                raise KeyError(
                    f"episode store {self.path} has no array {key!r}; it has {self.keys}"
                )
            if key in _LOWDIM_KEYS:
                values = np.array(self.lowdim(key)[rows])  # a copy: callers may write to it
            else:
                values = self._rows(key, rows)
            if key.startswith("images/"):
                out.setdefault("images", {})[key[len("images/") :]] = values
            else:
                out[key] = values
        return out


def open_for_append(path: str | Path, spec, attr: str, source: dict, option: str, needer: str) -> EpisodeStore:
    """The store at ``path`` (created if absent) for appending episodes of embodiment ``spec`` that come from
    ``source`` (kept as the root attribute ``attr``). A store of another embodiment or cameras, or holding
    episodes from another source, is a UsageError naming ``option``: appending would mix datasets."""
    import json

    from components.errors import UsageError

    source = json.loads(json.dumps(source))  # as stored
    if not Path(path).exists():
        EpisodeStore.create(path, embodiment=spec.name, fps=spec.control_hz, cameras=spec.camera_names)
        # Set before the store is opened for writing: its attribute writes keep what they read.
        zarr.open_group(str(path), mode="r+").attrs[attr] = source
    existing = EpisodeStore.open(path, mode="r")
    found = zarr.open_group(str(path), mode="r").attrs.get(attr)
    if existing.embodiment != spec.name or existing.cameras != spec.camera_names:
        raise UsageError(f"{option}: {path} holds embodiment {existing.embodiment!r} with cameras {existing.cameras}; "
                         f"{needer} needs {spec.name!r} with {spec.camera_names}. Choose another {option}.")
    if existing.n_episodes == 0:  # nothing to mix with yet (e.g. a first run killed before its first episode)
        zarr.open_group(str(path), mode="r+").attrs[attr] = source
    elif found != source:
        raise UsageError(f"{option}: {path} holds episodes from {found or 'something other than ' + needer}, not "
                         f"from {source}; appending would mix datasets. Choose another {option}.")
    return EpisodeStore.open(path, mode="a")

