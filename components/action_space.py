"""The canonical action space: one named table of D=32 slots that every robot maps into.

Every model output is a chunk ``[H_max, D]`` with a time mask ``[H_max]`` and a dimension mask
``[D]``. An embodiment names which canonical slots it uses; everything else is padding that the
mask keeps out of normalization, the loss and decoding (RDT's ``state_vec`` idea, as a table).
Proprioceptive state uses the same table, so "right_gripper" means one thing in both.
"""
from __future__ import annotations

import numpy as np

#: index -> canonical slot name. Read it as a table; never hard-code an index elsewhere.
CANONICAL_SLOTS: tuple[str, ...] = (
    # 0-6: left arm (bimanual robots), 6 joints + gripper position
    "left_arm_joint_0", "left_arm_joint_1", "left_arm_joint_2",
    "left_arm_joint_3", "left_arm_joint_4", "left_arm_joint_5", "left_gripper",
    # 7-13: right arm, 6 joints + gripper position
    "right_arm_joint_0", "right_arm_joint_1", "right_arm_joint_2",
    "right_arm_joint_3", "right_arm_joint_4", "right_arm_joint_5", "right_gripper",
    # 14-20: end-effector deltas (position, orientation) and a gripper command
    "ee_dx", "ee_dy", "ee_dz", "ee_droll", "ee_dpitch", "ee_dyaw", "gripper_cmd",
    # 21-23: mobile base velocity
    "base_vx", "base_vy", "base_wz",
    # 24-27: one waypoint in the robot frame (a chunk of H of them is a trajectory)
    "wp_x", "wp_y", "wp_cos", "wp_sin",
    # 28-31: absolute end-effector position and gripper opening (proprioception)
    "ee_x", "ee_y", "ee_z", "gripper_width",
)
ACTION_DIM = len(CANONICAL_SLOTS)  # D
MAX_HORIZON = 50  # H_max
SLOT_INDEX: dict[str, int] = {name: i for i, name in enumerate(CANONICAL_SLOTS)}
assert ACTION_DIM == 32 and len(SLOT_INDEX) == ACTION_DIM


def slot_indices(canonical_names: list[str] | tuple[str, ...]) -> np.ndarray:
    """Canonical indices ``[A]`` of named slots, in the given order."""
    unknown = [n for n in canonical_names if n not in SLOT_INDEX]
    if unknown:
        raise KeyError(f"unknown canonical slot(s) {unknown}; known slots: {list(CANONICAL_SLOTS)}")
    return np.asarray([SLOT_INDEX[n] for n in canonical_names], dtype=np.int64)


def dim_mask(indices: np.ndarray, dim: int = ACTION_DIM) -> np.ndarray:
    """Boolean mask ``[D]`` that is True on the given canonical indices."""
    mask = np.zeros(dim, dtype=bool)
    mask[indices] = True
    return mask


def pad(values: np.ndarray, indices: np.ndarray, dim: int = ACTION_DIM) -> np.ndarray:
    """Scatter ``values [..., A]`` into zeros ``[..., D]`` at ``indices [A]``."""
    values = np.asarray(values)
    if values.shape[-1] != len(indices):
        raise ValueError(f"expected last dimension {len(indices)}, got shape {values.shape}")
    out = np.zeros(values.shape[:-1] + (dim,), dtype=np.float32)
    out[..., indices] = values
    return out


def unpad(padded, indices: np.ndarray):
    """Gather ``[..., D]`` back to the embodiment's ``[..., A]`` (numpy or torch)."""
    return padded[..., indices]


def pad_time(chunk: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad ``chunk [H, D]`` with zeros to ``[horizon, D]``; returns it and the time mask ``[horizon]``."""
    h = chunk.shape[0]
    if h > horizon:
        raise ValueError(f"chunk of {h} steps is longer than the horizon {horizon}")
    out = np.zeros((horizon,) + chunk.shape[1:], dtype=np.float32)
    out[:h] = chunk
    mask = np.zeros(horizon, dtype=bool)
    mask[:h] = True
    return out, mask
