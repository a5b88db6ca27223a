"""``vla-stack run --record STORE.zarr``: policy rollouts into an episode store, with their outcome per frame.

Frame t holds the observation the action of step t was taken on (``images/<camera>`` of the spec's
cameras, ``state``), the executed action in the store's action form for the embodiment, and the outcome:
``success[t]`` (the task is achieved in the observation of frame t, as in ``vla-stack collect``),
``reward[t]`` (the reward of step t's action), ``max_reward[t]`` (the best reward up to and including step
t: the best stage for staged rewards), ``episode_success[t]`` (how the episode ended) and ``episode_seed``.
The action form is what ``collect`` stores: the env action for action chunks (Fetch, ALOHA), and for
waypoints (wheeled) the robot-frame waypoints of the trajectory actually driven from frame t
(``future_waypoints`` of the recorded poses, one per waypoint spacing), not the policy's prediction.
The root attribute ``rollout`` says the source is a policy rollout, of which policy and arm. An episode
is appended whole (``EpisodeStore.append_episode`` commits atomically).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from components.embodiment import EmbodimentSpec
from components.errors import UsageError

ROLLOUT_ATTR = "rollout"


class RolloutRecorder:
    """Collects one episode's frames through ``run_episode``'s ``on_frame``/``on_step`` and appends it."""

    def __init__(self, path: str, spec: EmbodimentSpec, source: dict):
        from components.episode_store import open_for_append

        self.spec = spec
        self.store = open_for_append(path, spec, ROLLOUT_ATTR, {"source": "policy_rollout", **source}, "--record",
                                     "vla-stack run")
        self._frames: list[dict] = []

    def on_frame(self, obs, info, rec, done) -> None:
        if rec.steps == 0:
            self._frames, self._obs_info = [], (obs, info)

    def on_step(self, obs, action, reward, next_obs, info) -> None:
        _, before = self._obs_info
        best = max([reward, *(f["reward"] for f in self._frames)])
        self._frames.append({"obs": obs, "action": np.asarray(action, np.float32), "reward": reward,
                             "success": bool(before.get("is_success", False)), "max_reward": best,
                             "pose": before.get("pose")})
        self._obs_info = (next_obs, info)

    def _actions(self) -> np.ndarray:
        if self.spec.action_kind != "waypoints":
            return np.stack([f["action"] for f in self._frames])
        from components.envs.wheeled_expert import future_waypoints

        poses = np.array([*(f["pose"] for f in self._frames), self._obs_info[1]["pose"]], dtype=np.float64)
        stride = max(1, round((self.spec.waypoint_spacing_s or 1.0 / self.spec.control_hz) * self.spec.control_hz))
        return np.stack([future_waypoints(poses, t, num=self.spec.chunk_horizon, stride=stride)
                         for t in range(len(self._frames))])

    def finish(self, rec) -> int:
        """Append the episode just run (``rec``: its EpisodeRecord); returns its index in the store."""
        frames, n = self._frames, len(self._frames)
        episode = {
            "action": self._actions(),
            "state": np.stack([np.asarray(f["obs"]["state"], np.float32) for f in frames]),
            "images": {c: np.stack([f["obs"]["images"][c] for f in frames]) for c in self.spec.camera_names},
            "success": np.array([f["success"] for f in frames]),
            "reward": np.array([f["reward"] for f in frames], np.float32),
            "max_reward": np.array([f["max_reward"] for f in frames], np.float32),
            "episode_success": np.full(n, bool(rec.success)),
            "episode_seed": np.full(n, rec.seed, np.int64),
        }
        return self.store.append_episode(episode, rec.instruction)
