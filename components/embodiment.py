"""Embodiment specs: what a robot is, read from YAML, and the prompt generated from it.

The embodiment prompt is produced from the spec (slots, units, ranges, rate, notes), so the text
the model reads can never disagree with the action space it is trained on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from components.action_space import MAX_HORIZON, dim_mask, slot_indices
from components.config_files import config_path
from components.errors import CheckpointError, VLAStackError, yaml_problem

EMBODIMENT_DIR = config_path("embodiments")
ACTION_KINDS = {
    "absolute_joints": "absolute joint positions",
    "ee_delta": "end-effector position deltas with a gripper command",
    "base_velocity": "base velocity commands",
    "waypoints": "future waypoints (x forward, y left, cos and sin of heading) in the robot frame",
}
#: the camera that shows the first camera's view ``past_frame_s`` earlier (the video embodiment)
PAST_CAMERA = "past"


class EmbodimentError(VLAStackError, ValueError):
    """A spec, or data claimed to belong to a spec, is inconsistent with it."""


class ActionLimitError(CheckpointError):
    """A model output cannot be held to its embodiment's limits (non-finite and no safe action)."""


@dataclass(frozen=True)
class Slot:
    name: str
    canonical: str
    unit: str
    low: float
    high: float


@dataclass(frozen=True)
class Camera:
    name: str
    height: int
    width: int


@dataclass(frozen=True)
class EmbodimentSpec:
    name: str
    robot: str
    action_kind: str
    control_hz: float
    chunk_horizon: int
    cameras: tuple[Camera, ...]
    action_slots: tuple[Slot, ...]
    state_slots: tuple[Slot, ...]
    notes: str = ""
    waypoint_spacing_s: float | None = None
    safe_action: tuple[float, ...] | None = None  # [A] executed in place of a non-finite model output
    past_frame_s: float | None = None  # camera PAST_CAMERA shows the first camera this long earlier
    instruction: str | None = None  # the task when none is given (an embodiment with one task)
    source: str = field(default="<memory>", compare=False)

    # ---- derived views -------------------------------------------------------------------
    @property
    def action_dim(self) -> int:
        return len(self.action_slots)

    @property
    def state_dim(self) -> int:
        return len(self.state_slots)

    @property
    def action_indices(self) -> np.ndarray:
        """Canonical indices ``[A]`` of the action slots."""
        return slot_indices([s.canonical for s in self.action_slots])

    @property
    def state_indices(self) -> np.ndarray:
        return slot_indices([s.canonical for s in self.state_slots])

    @property
    def action_mask(self) -> np.ndarray:
        """Dimension mask ``[D]``."""
        return dim_mask(self.action_indices)

    @property
    def state_mask(self) -> np.ndarray:
        return dim_mask(self.state_indices)

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.cameras]

    def prompt(self) -> str:
        """The embodiment prompt, generated from the spec."""
        def slots_text(slots: tuple[Slot, ...]) -> str:
            return "; ".join(f"{s.name} ({s.unit + ', ' if s.unit else ''}{s.low:g} to {s.high:g})"
                             for s in slots)

        rate = f"{self.control_hz:g} Hz"
        if self.action_kind == "waypoints" and self.waypoint_spacing_s:
            rate = f"one waypoint every {self.waypoint_spacing_s:g} s"
        lines = [
            f"You are controlling {self.robot} (embodiment: {self.name}).",
            f"Output {ACTION_KINDS[self.action_kind]}, {self.chunk_horizon} steps per chunk, {rate}.",
            f"Action space: {slots_text(self.action_slots)}.",
        ]
        if self.state_slots == self.action_slots:
            lines.append("State: the same slots as the action space.")
        elif self.state_slots:
            lines.append(f"State: {slots_text(self.state_slots)}.")
        else:
            lines.append("State: none.")
        lines.append("Cameras: " + ", ".join(self.camera_names) + ".")
        if self.past_frame_s is not None:
            lines.append(f"Camera {PAST_CAMERA} is camera {self.camera_names[0]} {self.past_frame_s:g} s earlier.")
        if self.notes:
            lines.append(self.notes.strip())
        return "\n".join(lines)

    # ---- limits --------------------------------------------------------------------------
    def limit_actions(self, actions: np.ndarray) -> tuple[np.ndarray, int, int]:
        """``actions [..., A]`` held to the declared slot ranges: ``(limited, n_clipped, n_nonfinite)``.

        Finite values outside a slot's range are clipped to it; a time step with a non-finite value
        becomes ``safe_action``, and without one that is an :class:`ActionLimitError`.
        """
        self.check_width("action", actions.shape[-1], f"actions for embodiment '{self.name}'")
        lows, highs = _inward_bounds(self.action_slots, actions.dtype)
        finite = np.isfinite(actions)
        n_nonfinite = int((~finite).sum())
        limited = np.clip(actions, lows, highs)
        n_clipped = int((finite & (limited != actions)).sum())
        if n_nonfinite:
            if self.safe_action is None:
                raise ActionLimitError(
                    f"the model produced {n_nonfinite} non-finite action value(s) for embodiment '{self.name}' "
                    f"and its spec ({self.source}) names no safe_action to execute instead; "
                    f"the checkpoint is probably diverged or damaged")
            bad_steps = ~finite.all(axis=-1)
            limited[bad_steps] = np.asarray(self.safe_action, dtype=actions.dtype)
        return limited, n_clipped, n_nonfinite

    # ---- data checks ---------------------------------------------------------------------
    def check_width(self, key: str, width: int, source: str) -> None:
        expected = self.action_dim if key == "action" else self.state_dim
        if width != expected:
            names = [s.name for s in (self.action_slots if key == "action" else self.state_slots)]
            raise EmbodimentError(
                f"{source}: '{key}' has width {width} but embodiment '{self.name}' "
                f"({self.source}) declares {expected} {key} slots {names}")

    def check_range(self, key: str, values: np.ndarray, source: str) -> None:
        """Raise if any value of ``values [..., A]`` lies outside its slot's declared range."""
        slots = self.action_slots if key == "action" else self.state_slots
        self.check_width(key, values.shape[-1], source)
        flat = values.reshape(-1, values.shape[-1])
        if not np.isfinite(flat).all():
            row, col = np.argwhere(~np.isfinite(flat))[0]
            raise EmbodimentError(f"{source}: non-finite '{key}' value in slot '{slots[col].name}' "
                                  f"of embodiment '{self.name}' (row {row})")
        lows = np.array([s.low for s in slots])
        highs = np.array([s.high for s in slots])
        bad = (flat < lows) | (flat > highs)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            s = slots[col]
            raise EmbodimentError(
                f"{source}: '{key}' value {flat[row, col]:.4g} in slot '{s.name}' is outside the "
                f"range [{s.low:g}, {s.high:g}] declared by embodiment '{self.name}' ({self.source}), "
                f"row {row}; {int(bad[:, col].sum())} value(s) of this slot are out of range")


def _inward_bounds(slots: tuple[Slot, ...], dtype) -> tuple[np.ndarray, np.ndarray]:
    """Slot ranges in ``dtype``, rounded inwards so a clipped value never lies outside the declared range."""
    lows64, highs64 = np.array([s.low for s in slots]), np.array([s.high for s in slots])
    lows, highs = lows64.astype(dtype), highs64.astype(dtype)
    lows = np.where(lows < lows64, np.nextafter(lows, np.inf, dtype=dtype), lows)
    highs = np.where(highs > highs64, np.nextafter(highs, -np.inf, dtype=dtype), highs)
    return lows.astype(dtype), highs.astype(dtype)


def _parse_slots(raw, where: str) -> tuple[Slot, ...]:
    if not isinstance(raw, list) or not raw:
        raise EmbodimentError(f"{where}: expected a non-empty list of slots")
    slots = []
    for i, s in enumerate(raw):
        try:
            slot = Slot(name=str(s["name"]), canonical=str(s["canonical"]), unit=str(s["unit"]),
                        low=float(s["low"]), high=float(s["high"]))
        except (KeyError, TypeError) as e:
            raise EmbodimentError(f"{where}[{i}]: each slot needs name, canonical, unit, low, high "
                                  f"(missing {e})") from None
        if slot.low >= slot.high:
            raise EmbodimentError(f"{where}[{i}] '{slot.name}': low {slot.low} must be below high {slot.high}")
        slots.append(slot)
    return tuple(slots)


def _parse_safe_action(raw: dict, slots: tuple[Slot, ...], source: str) -> tuple[float, ...] | None:
    value = raw.get("safe_action")
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != len(slots):
        raise EmbodimentError(f"{source}: safe_action must list one value per action slot "
                              f"{[s.name for s in slots]}, got {value!r}")
    safe = tuple(float(v) for v in value)
    for s, v in zip(slots, safe):
        if not s.low <= v <= s.high:
            raise EmbodimentError(f"{source}: safe_action value {v:g} for slot '{s.name}' is outside "
                                  f"[{s.low:g}, {s.high:g}]")
    return safe


def _parse_past_frame_s(raw: dict, cameras: tuple[Camera, ...], source: str) -> float | None:
    value = raw.get("past_frame_s")
    if value is None:
        return None
    try:
        past_s = float(value)
    except (TypeError, ValueError):
        past_s = float("nan")
    if not past_s > 0:
        raise EmbodimentError(f"{source}: past_frame_s must be a number of seconds > 0, got {value!r}")
    names = [c.name for c in cameras]
    if PAST_CAMERA not in names[1:]:
        raise EmbodimentError(f"{source}: past_frame_s needs a camera named '{PAST_CAMERA}' after the first "
                              f"(the first camera {past_s:g} s earlier); cameras are {names}")
    return past_s


def spec_from_dict(raw: dict, source: str = "<memory>") -> EmbodimentSpec:
    required = ["name", "robot", "action_kind", "control_hz", "chunk_horizon", "cameras", "action_slots"]
    missing = [k for k in required if k not in raw]
    if missing:
        raise EmbodimentError(f"{source}: missing field(s) {missing}; required: {required}")
    if raw["action_kind"] not in ACTION_KINDS:
        raise EmbodimentError(f"{source}: action_kind '{raw['action_kind']}' is not one of {sorted(ACTION_KINDS)}")
    action_slots = _parse_slots(raw["action_slots"], f"{source}: action_slots")
    state_raw = raw.get("state_slots", [])
    state_slots = action_slots if state_raw == "same_as_action" else (
        _parse_slots(state_raw, f"{source}: state_slots") if state_raw else ())
    horizon = int(raw["chunk_horizon"])
    if not 0 < horizon <= MAX_HORIZON:
        raise EmbodimentError(f"{source}: chunk_horizon {horizon} must be in 1..{MAX_HORIZON}")
    cameras = tuple(Camera(str(c["name"]), int(c["height"]), int(c["width"])) for c in raw["cameras"])
    spec = EmbodimentSpec(
        name=str(raw["name"]), robot=str(raw["robot"]), action_kind=raw["action_kind"],
        control_hz=float(raw["control_hz"]), chunk_horizon=horizon, cameras=cameras,
        action_slots=action_slots, state_slots=state_slots, notes=str(raw.get("notes", "")),
        waypoint_spacing_s=raw.get("waypoint_spacing_s"), safe_action=_parse_safe_action(raw, action_slots, source),
        past_frame_s=_parse_past_frame_s(raw, cameras, source),
        instruction=str(raw["instruction"]) if raw.get("instruction") is not None else None, source=source)
    for slots, what in ((spec.action_slots, "action"), (spec.state_slots, "state")):
        try:
            idx = slot_indices([s.canonical for s in slots])
        except KeyError as e:
            raise EmbodimentError(f"{source}: {what} slots: {e.args[0]}") from None
        if len(set(idx.tolist())) != len(idx):
            raise EmbodimentError(f"{source}: two {what} slots map to the same canonical slot")
    return spec


def spec_to_dict(spec: EmbodimentSpec) -> dict:
    def slots(ss):
        return [dict(name=s.name, canonical=s.canonical, unit=s.unit, low=s.low, high=s.high) for s in ss]
    out = dict(name=spec.name, robot=spec.robot, action_kind=spec.action_kind, control_hz=spec.control_hz,
               chunk_horizon=spec.chunk_horizon,
               cameras=[dict(name=c.name, height=c.height, width=c.width) for c in spec.cameras],
               action_slots=slots(spec.action_slots),
               state_slots="same_as_action" if spec.state_slots == spec.action_slots else slots(spec.state_slots),
               notes=spec.notes)
    if spec.waypoint_spacing_s is not None:
        out["waypoint_spacing_s"] = spec.waypoint_spacing_s
    if spec.safe_action is not None:
        out["safe_action"] = list(spec.safe_action)
    if spec.past_frame_s is not None:
        out["past_frame_s"] = spec.past_frame_s
    if spec.instruction is not None:
        out["instruction"] = spec.instruction
    return out


def load_spec(path: str | Path) -> EmbodimentSpec:
    path = Path(path)
    with open(path) as f:
        raw = yaml.safe_load(f)
    return spec_from_dict(raw, source=str(path))


class Embodiments:
    """The set of embodiments a model knows, by name (what ``embodiments.yaml`` in a checkpoint holds)."""

    def __init__(self, specs: list[EmbodimentSpec]):
        self._specs = {s.name: s for s in specs}

    @classmethod
    def from_config_dir(cls, names: list[str] | None = None, directory: Path = EMBODIMENT_DIR) -> "Embodiments":
        available = {p.stem: p for p in sorted(Path(directory).glob("*.yaml"))}
        names = list(available) if names is None else list(names)  # None: all; []: none
        unknown = [n for n in names if n not in available]
        if unknown:
            raise EmbodimentError(f"unknown embodiment(s) {unknown}; {directory} has {sorted(available)}")
        return cls([load_spec(available[n]) for n in names])

    @classmethod
    def load(cls, path: str | Path) -> "Embodiments":
        try:
            with open(path) as f:
                entries = list(yaml.safe_load(f)["embodiments"])
        except (yaml.YAMLError, KeyError, TypeError) as err:
            problem = yaml_problem(err) if isinstance(err, yaml.YAMLError) else f"{type(err).__name__}: {err}"
            raise EmbodimentError(f"{path}: expected YAML with a list 'embodiments' of specs ({problem})") from None
        return cls([spec_from_dict(r, source=f"{path}:{r.get('name')}") for r in entries])

    def save(self, path: str | Path) -> None:
        with open(path, "w") as f:
            yaml.safe_dump({"embodiments": [spec_to_dict(s) for s in self._specs.values()]}, f, sort_keys=False)

    def __getitem__(self, name: str) -> EmbodimentSpec:
        if name not in self._specs:
            raise EmbodimentError(f"unknown embodiment '{name}'; this model knows {sorted(self._specs)}")
        return self._specs[name]

    def __contains__(self, name: str) -> bool:
        return name in self._specs

    def __iter__(self):
        return iter(self._specs.values())

    def names(self) -> list[str]:
        return list(self._specs)
