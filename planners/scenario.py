"""Door scenarios: doors of the wheeled env that close or open at given steps of an episode.

Two spellings, both checked against the floor plan (rooms, doors, steps) with a ``ScenarioError``
naming the spec or file and the item:

* a command-line string: comma-separated ``[close |open ]A-B@STEP`` items, e.g.
  ``"kitchen-hallway@40"`` (close the door between kitchen and hallway after step 40) or
  ``"north hall-east hall@10, open north hall-east hall@200"``; room names may contain spaces and
  hyphens (the split is the one that names two rooms of the plan);
* a YAML file (``*.yaml``/``*.yml``)::

      floorplan: loop          # optional: the plan it is written for (checked)
      description: free text   # optional
      events:
        - {step: 40, close: [kitchen, hallway]}
        - {step: 90, open: [kitchen, hallway]}

:class:`ScenarioEnv` wraps a wheeled env and plays a scenario: an event at step ``s`` is applied after
the ``s``-th step (step 0: at reset), and the observation that step returns shows it. A door does not
close on the robot: such an event waits until the doorway is clear. docs/ARCHITECTURE.md, Navigation.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import yaml

from components.envs.floorplan import FloorPlan, FloorPlanError
from components.errors import ConfigError, yaml_problem


class ScenarioError(ConfigError):
    """A scenario that names a room, door or step the floor plan or episode does not have."""


@dataclass(frozen=True)
class DoorEvent:
    """Close (``closed=True``) or open the door between rooms ``a`` and ``b`` after env step ``step``."""
    step: int
    a: str
    b: str
    closed: bool = True

    def describe(self) -> str:
        return f"{'close' if self.closed else 'open'} {self.a}-{self.b}@{self.step}"


@dataclass(frozen=True)
class Scenario:
    """Door events in step order (stable for events of one step)."""
    events: tuple[DoorEvent, ...] = ()
    source: str = "<scenario>"

    def __post_init__(self):
        object.__setattr__(self, "events", tuple(sorted(self.events, key=lambda e: e.step)))


def _step(value: Any, where: str, max_steps: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ScenarioError(f"{where}: step must be a whole number >= 0, got {value!r}")
    try:
        step = int(value)
    except ValueError:
        raise ScenarioError(f"{where}: step must be a whole number >= 0, got {value!r}") from None
    if step < 0:
        raise ScenarioError(f"{where}: step must be >= 0, got {step}")
    if max_steps is not None and step >= max_steps:
        raise ScenarioError(f"{where}: step {step} is past the episode's last step ({max_steps - 1})")
    return step


def _door(plan: FloorPlan, a: str, b: str, where: str) -> tuple[str, str]:
    try:
        plan.door_between(a, b)
    except FloorPlanError as e:
        raise ScenarioError(f"{where}: {e}") from None
    return a, b


def _split_rooms(plan: FloorPlan, pair: str, where: str) -> tuple[str, str]:
    """``"A-B"`` -> (A, B), the one hyphen split whose both sides are rooms of ``plan``."""
    rooms = set(plan.room_names)
    splits = [(pair[:i].strip(), pair[i + 1:].strip()) for i, c in enumerate(pair) if c == "-"]
    named = [s for s in splits if s[0] in rooms and s[1] in rooms]
    if len(named) > 1:
        raise ScenarioError(f"{where}: {pair!r} splits into two rooms in more than one way: {named}")
    if not named:
        raise ScenarioError(
            f"{where}: {pair!r} must be ROOM-ROOM naming two rooms of {plan.source}; rooms are {plan.room_names}"
        )
    return _door(plan, *named[0], where)


def parse_scenario_string(spec: str, plan: FloorPlan, max_steps: int | None = None) -> Scenario:
    """Parse the command-line spelling (module docstring) against ``plan``."""
    source = f"scenario {spec!r}"
    events = []
    items = [item.strip() for item in spec.split(",")]
    if not any(items):
        raise ScenarioError(f"{source}: empty; expected items like 'kitchen-hallway@40'")
    for i, item in enumerate(items):
        where = f"{source}: item {i + 1} {item!r}"
        closed = True
        for verb, state in (("close ", True), ("open ", False)):
            if item.lower().startswith(verb):
                item, closed = item[len(verb):].strip(), state
        if "@" not in item:
            raise ScenarioError(f"{where}: expected [close |open ]ROOM-ROOM@STEP, e.g. 'kitchen-hallway@40'")
        pair, step = item.rsplit("@", 1)
        a, b = _split_rooms(plan, pair, where)
        events.append(DoorEvent(_step(step.strip(), where, max_steps), a, b, closed))
    return Scenario(tuple(events), source)


def parse_scenario_data(data: Any, plan: FloorPlan, source: str = "<scenario>",
                        max_steps: int | None = None) -> Scenario:
    """Validate a scenario mapping (parsed YAML, module docstring) against ``plan``."""
    if not isinstance(data, dict) or "events" not in data:
        raise ScenarioError(f"{source}: a scenario must be a mapping with 'events' (a list)")
    unknown = set(data) - {"events", "floorplan", "description"}
    if unknown:
        raise ScenarioError(f"{source}: unknown field(s) {sorted(unknown)}; expected events, floorplan, description")
    if data.get("floorplan") is not None and str(data["floorplan"]) != plan.name:
        raise ScenarioError(f"{source}: written for floor plan {data['floorplan']!r}, not {plan.name!r}")
    raw = data["events"]
    if not isinstance(raw, list):
        raise ScenarioError(f"{source}: 'events' must be a list of {{step: N, close: [A, B]}}, got {raw!r}")
    events = []
    for i, ev in enumerate(raw):
        where = f"{source}: events[{i}]"
        if not isinstance(ev, dict):
            raise ScenarioError(f"{where}: must be a mapping like {{step: 40, close: [kitchen, hallway]}}")
        extra = set(ev) - {"step", "close", "open"}
        if extra:
            raise ScenarioError(f"{where}: unknown field(s) {sorted(extra)}; expected step and close or open")
        verbs = [v for v in ("close", "open") if v in ev]
        if "step" not in ev or len(verbs) != 1:
            raise ScenarioError(f"{where}: needs 'step' and exactly one of 'close' or 'open'")
        pair = ev[verbs[0]]
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ScenarioError(f"{where}: {verbs[0]!r} must name two rooms [A, B], got {pair!r}")
        a, b = _door(plan, str(pair[0]), str(pair[1]), where)
        events.append(DoorEvent(_step(ev["step"], where, max_steps), a, b, verbs[0] == "close"))
    return Scenario(tuple(events), source)


def load_scenario(spec: str | Path | None, plan: FloorPlan, max_steps: int | None = None) -> Scenario:
    """A scenario from a YAML path (``.yaml``/``.yml``), the command-line string, or None (no events)."""
    if spec is None:
        return Scenario()
    path = Path(spec)
    if isinstance(spec, Path) or path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ScenarioError(f"scenario file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ScenarioError(f"{path}: invalid YAML: {yaml_problem(e)}") from None
        return parse_scenario_data(data, plan, str(path), max_steps)
    return parse_scenario_string(str(spec), plan, max_steps)


class ScenarioEnv(gym.Wrapper):
    """Plays a :class:`Scenario` on a wheeled env (one with ``set_door``); see the module docstring.

    ``info["door_events"]``: the events applied at this step (``DoorEvent.describe()`` strings);
    ``applied``: every event applied this episode, as (env step, event).
    """

    def __init__(self, env: gym.Env, scenario: Scenario):
        super().__init__(env)
        if not hasattr(env.unwrapped, "set_door"):
            raise ConfigError(f"a door scenario needs the wheeled env, got {env.unwrapped.__class__.__name__}")
        self.scenario = scenario
        self.pending: list[DoorEvent] = []
        self.applied: list[tuple[int, DoorEvent]] = []

    def _apply(self, step: int, obs: dict, info: dict) -> tuple[dict, dict]:
        due = [e for e in self.pending if e.step <= step]
        done = [e for e in due if self.env.unwrapped.set_door(e.a, e.b, closed=e.closed)]
        self.pending = [e for e in self.pending if e not in done]
        self.applied += [(step, e) for e in done]
        if done:
            obs = self.env.unwrapped.observe()
        return obs, {**info, "door_events": [e.describe() for e in done]}

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.pending, self.applied = list(self.scenario.events), []
        return self._apply(0, obs, info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        obs, info = self._apply(int(self.env.unwrapped.step_count), obs, info)
        return obs, reward, terminated, truncated, info
