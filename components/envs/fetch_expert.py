"""Scripted experts for the Fetch tasks (privileged: they read object/goal positions).

``FetchExpert(task).act(raw_obs)`` maps the gymnasium-robotics goal-env dict observation
(``env.unwrapped.raw_obs``) to a 4-d action (dx, dy, dz, gripper) in [-1, 1]:

* reach: proportional control of the gripper towards the goal;
* push: go above a point behind the block (opposite the goal direction), lower to block height,
  push along the block->goal line with lateral correction; re-approach if the block slips away;
* pick and place: above the block (open), descend, close, lift, move to the goal, hold.

``FetchExpert.record`` records an episode for the store (see ``components.envs.experts``).
"""

from __future__ import annotations

import numpy as np

from components.envs.experts import ExpertEpisode, stack_frames

_STEP = 0.05  # gymnasium-robotics multiplies the position action by 0.05 m


def _move(target: np.ndarray, grip: np.ndarray, gain: float = 1.0) -> np.ndarray:
    return np.clip(gain * (target - grip) / _STEP, -1.0, 1.0)


class FetchExpert:
    """Stateful scripted controller for one Fetch task; call ``reset()`` at each episode start."""

    noise_window = False  # DART noise perturbs the whole episode

    def __init__(self, task: str):
        if task not in ("reach", "push", "pick_and_place"):
            raise ValueError(f"unknown Fetch task {task!r}")
        self.task = task
        self.reset()

    @classmethod
    def from_spec(cls, env, spec) -> "FetchExpert":
        return cls(env.unwrapped.task)

    def reset(self) -> None:
        self.phase = "approach"
        self.close_steps = 0

    def record(self, env, seed: int, noise: float = 0.0, noise_steps: int | None = None) -> ExpertEpisode:
        """One episode of ``env`` reset with ``seed``; ``noise`` > 0 (DART): Gaussian noise of that std
        on the executed dx, dy, dz (seeded by ``seed``), the recorded label stays the expert's action.

        Frames: ``action`` [T, 4], ``state`` [T, 4], ``images/<cam>``, ``success`` [T] (per observation).
        Success is judged at the last step (the gymnasium-robotics convention).
        """
        obs, info = env.reset(seed=seed)
        self.reset()
        rng = np.random.default_rng([seed, 1])
        frames, executed = [], []
        while True:
            action = self.act(env.unwrapped.raw_obs)
            frames.append({"action": action, "state": obs["state"], "images": obs["images"],
                           "success": info["is_success"]})
            command = action
            if noise:
                command = action.copy()
                command[:3] = np.clip(action[:3] + rng.normal(0.0, noise, 3), -1.0, 1.0)
            executed.append(command)
            obs, _, terminated, truncated, info = env.step(command)
            if terminated or truncated:
                break
        return ExpertEpisode(seed, len(frames), bool(info["is_success"]), info["instruction"],
                             stack_frames(frames), np.stack(executed))

    # ------------------------------------------------------------------
    def act(self, raw_obs: dict) -> np.ndarray:
        o = np.asarray(raw_obs["observation"], dtype=np.float64)
        goal = np.asarray(raw_obs["desired_goal"], dtype=np.float64)
        grip = o[:3]
        if self.task == "reach":
            a = np.zeros(4)
            a[:3] = _move(goal, grip, gain=0.9)
            return a.astype(np.float32)
        obj = o[3:6]
        width = float(o[9] + o[10])
        if self.task == "push":
            return self._push(grip, obj, goal).astype(np.float32)
        return self._pick_and_place(grip, obj, goal, width).astype(np.float32)

    # ------------------------------------------------------------------
    def _push(self, grip, obj, goal) -> np.ndarray:
        a = np.zeros(4)
        a[3] = -1.0  # keep the fingers closed: a compact pusher
        d = goal[:2] - obj[:2]
        dist = np.linalg.norm(d)
        if dist < 0.015:
            # Block is on the target: back off gently upward so we do not knock it further.
            a[:3] = _move(np.array([grip[0], grip[1], obj[2] + 0.08]), grip) * 0.5
            return a
        u = d / dist
        behind = obj[:2] - u * 0.065
        rel = grip[:2] - obj[:2]
        along = float(rel @ u)  # < 0 when the gripper is behind the block
        lateral = float(rel @ np.array([-u[1], u[0]]))
        low_z = obj[2] + 0.005
        if self.phase == "push":
            if along > -0.02 or abs(lateral) > 0.03 or grip[2] > low_z + 0.04:
                self.phase = "approach"
        if self.phase == "approach":
            high_z = obj[2] + 0.07
            if np.linalg.norm(grip[:2] - behind) > 0.012:
                z = high_z if (along > -0.04 or abs(lateral) > 0.02) else max(low_z, grip[2])
                a[:3] = _move(np.array([behind[0], behind[1], z]), grip)
                # Do not descend through the block; climb first if we are low and in front/side.
                if grip[2] < high_z - 0.01 and (along > -0.04 or abs(lateral) > 0.02):
                    a[:2] *= 0.3
                return a
            if grip[2] > low_z + 0.01:
                a[:3] = _move(np.array([behind[0], behind[1], low_z]), grip)
                return a
            self.phase = "push"
        # push phase: drive the contact point so the block centre moves to the goal
        target_xy = goal[:2] - u * 0.045
        step = target_xy - grip[:2]
        n = np.linalg.norm(step)
        if n > 0.03:
            step = step / n * 0.03  # slow, steady push
        corr = -lateral * np.array([-u[1], u[0]])
        a[:2] = np.clip((step + corr) / _STEP, -1.0, 1.0)
        a[2] = np.clip((low_z - grip[2]) / _STEP, -1.0, 1.0)
        return a

    def _pick_and_place(self, grip, obj, goal, width) -> np.ndarray:
        a = np.zeros(4)
        rel = obj - grip
        xy_err = np.linalg.norm(rel[:2])
        if self.phase in ("carry",) and (np.linalg.norm(rel) > 0.05):
            self.phase = "approach"  # dropped it: start over
            self.close_steps = 0
        if self.phase == "approach":
            a[3] = 1.0
            if xy_err > 0.01:
                a[:3] = _move(obj + np.array([0, 0, 0.06]), grip)
                if grip[2] < obj[2] + 0.03:
                    a[2] = max(a[2], 0.5)
                return a
            self.phase = "descend"
        if self.phase == "descend":
            a[3] = 1.0
            if grip[2] - obj[2] > 0.008 or xy_err > 0.015:
                a[:3] = _move(obj + np.array([0, 0, 0.0]), grip)
                return a
            self.phase = "close"
        if self.phase == "close":
            a[3] = -1.0
            a[:3] = _move(obj, grip) * 0.5
            self.close_steps += 1
            if self.close_steps < 3:
                return a
            self.phase = "carry"
        # carry: lift (if the goal is far in xy) and move to goal, keep closed; hold there
        a[3] = -1.0
        target = goal.copy()
        if np.linalg.norm(goal[:2] - obj[:2]) > 0.03 and obj[2] < goal[2] + 0.02:
            target = np.array([goal[0], goal[1], max(goal[2], obj[2] + 0.03)])
        # command the gripper so that the *object* reaches the target
        a[:3] = _move(target - rel, grip)
        return a
