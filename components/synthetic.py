"""Synthetic point-reaching scenes: a small dataset for tests and the first-run demo.

Not a simulator and not a benchmark: a deterministic 2-D scene (a red target, a blue agent that
approaches it) rendered per camera, with actions and states that are fixed smooth functions of
what the image shows, written to a real episode store for any embodiment spec. It lets the whole
training and inference path run in seconds with data the model can actually learn.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from components.embodiment import EmbodimentSpec, Slot
from components.episode_store import EpisodeStore

INSTRUCTIONS = ["reach the red target", "move to the red dot", "go to the red marker"]


def _slot_weights(slots: tuple[Slot, ...], salt: str) -> np.ndarray:
    """Fixed per-slot projections ``[A, 4]`` of (target - agent, agent), seeded by the slot name."""
    return np.stack([np.random.default_rng(zlib.crc32(f"{salt}:{s.name}".encode())).normal(size=4)
                     for s in slots])


def _slot_values(slots, weights, features: np.ndarray) -> np.ndarray:
    """``features [..., 4]`` -> values ``[..., A]`` strictly inside each slot's range."""
    lows = np.array([s.low for s in slots])
    highs = np.array([s.high for s in slots])
    unit = 0.5 + 0.4 * np.tanh(features @ weights.T)
    return (lows + (highs - lows) * unit).astype(np.float32)


def _render(height: int, width: int, target: np.ndarray, agent: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.full((height, width, 3), 90, np.uint8)
    radius = max(2.0, 0.08 * min(height, width))
    for pos, color in ((target, (220, 30, 30)), (agent, (30, 60, 220))):
        cx, cy = (pos[0] + 1) / 2 * (width - 1), (pos[1] + 1) / 2 * (height - 1)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 <= radius ** 2] = color
    return img


def synthetic_observation(spec: EmbodimentSpec, target=(0.3, -0.2), agent=(-0.5, 0.4)) -> dict:
    """One observation in the Policy's format for ``spec``: a rendered scene per camera and the
    state at the middle of every slot's range."""
    target, agent = np.asarray(target, float), np.asarray(agent, float)
    return {"images": {c.name: _render(c.height, c.width, target, agent) for c in spec.cameras},
            "state": np.array([(s.low + s.high) / 2 for s in spec.state_slots], np.float32)}


def make_synthetic_store(path: str | Path, spec: EmbodimentSpec, episodes: int = 8, steps: int = 30,
                         seed: int = 0) -> EpisodeStore:
    """Write ``episodes`` synthetic episodes of ``steps`` frames for ``spec`` to a new store."""
    rng = np.random.default_rng(seed)
    store = EpisodeStore.create(path, embodiment=spec.name, fps=spec.control_hz, cameras=spec.camera_names)
    wa = _slot_weights(spec.action_slots, "action")
    ws = _slot_weights(spec.state_slots, "state") if spec.state_dim else None
    for e in range(episodes):
        target = rng.uniform(-0.8, 0.8, 2)
        agent = np.empty((steps + spec.chunk_horizon, 2))
        agent[0] = rng.uniform(-0.8, 0.8, 2)
        for t in range(1, len(agent)):
            agent[t] = agent[t - 1] + 0.12 * (target - agent[t - 1])
        feats = np.concatenate([target[None] - agent, agent], axis=1)  # [T + H, 4]
        per_step = _slot_values(spec.action_slots, wa, feats)
        if spec.action_kind == "waypoints":
            action = np.stack([per_step[t + 1: t + 1 + spec.chunk_horizon] for t in range(steps)])
        else:
            action = per_step[:steps]
        episode = {
            "action": action,
            "state": (_slot_values(spec.state_slots, ws, feats[:steps]) if ws is not None
                      else np.zeros((steps, 0), np.float32)),
            "images": {c.name: np.stack([_render(c.height, c.width, target, agent[t]) for t in range(steps)])
                       for c in spec.cameras},
        }
        store.append_episode(episode, INSTRUCTIONS[e % len(INSTRUCTIONS)])
    return store
