"""ALOHA env (gym-aloha scenes, joint-space control) and its scripted expert."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import components.envs  # noqa: F401  (registers the ids)
from components.envs.aloha import AlohaEnv
from components.envs.aloha_expert import AlohaExpert, MocapSim, object_poses_for_seed

SMALL = (60, 80)
TRANSFER = "vla_stack/AlohaTransferCube-v0"
INSERTION = "vla_stack/AlohaInsertion-v0"


@pytest.mark.parametrize("env_id", [TRANSFER, INSERTION])
def test_check_env_passes(env_id):
    env = gym.make(env_id, image_size=SMALL, render_mode="rgb_array", render_quality="flat")
    try:
        check_env(env.unwrapped)
        frame = env.unwrapped.render()
        assert frame.shape == (*SMALL, 3) and frame.dtype == np.uint8
    finally:
        env.close()


def test_registered_ids_and_contract():
    env = gym.make(TRANSFER, image_size=SMALL)
    try:
        u = env.unwrapped
        assert isinstance(u, AlohaEnv) and u.task == "transfer_cube"
        assert u.instruction == "pick up the red cube with the right arm and hand it to the left arm"
        obs, info = env.reset(seed=0)
        assert set(obs) == {"images", "state"}
        assert obs["state"].shape == (14,) and obs["state"].dtype == np.float32
        assert info["instruction"] == u.instruction and info["is_success"] is False
        # gripper entries of the state are normalized, ~0.1 at the start pose
        assert 0.0 < obs["state"][6] < 0.2 and 0.0 < obs["state"][13] < 0.2
        assert env.action_space.shape == (14,)
        obs2, r, term, trunc, info = env.step(obs["state"])
        assert obs2 in env.observation_space and not term and not trunc
    finally:
        env.close()
    env = gym.make(INSERTION, image_size=SMALL)
    try:
        assert env.unwrapped.instruction == "insert the peg into the socket"
    finally:
        env.close()


def test_same_seed_same_first_observation():
    env = gym.make(TRANSFER, image_size=SMALL)
    try:
        a, ia = env.reset(seed=7)
        b, ib = env.reset(seed=7)
        c, ic = env.reset(seed=8)
        np.testing.assert_array_equal(a["images"]["top"], b["images"]["top"])
        np.testing.assert_array_equal(a["state"], b["state"])
        np.testing.assert_array_equal(ia["object_poses"], ib["object_poses"])
        assert not np.array_equal(ia["object_poses"], ic["object_poses"])
        # the expert derives the same object poses from the seed without an env
        np.testing.assert_allclose(object_poses_for_seed("transfer_cube", 7), ia["object_poses"])
    finally:
        env.close()


def test_only_requested_cameras_at_requested_size():
    env = gym.make(INSERTION, cameras=("angle", "left_wrist"), image_size=(48, 64))
    try:
        obs, _ = env.reset(seed=0)
        assert set(obs["images"]) == {"angle", "left_wrist"}
        for img in obs["images"].values():
            assert img.shape == (48, 64, 3) and img.dtype == np.uint8
        assert set(env.observation_space["images"].spaces) == {"angle", "left_wrist"}
        calls = []
        physics = env.unwrapped.physics
        orig = physics.render

        def spy(*args, **kwargs):
            calls.append(kwargs.get("camera_id"))
            return orig(*args, **kwargs)

        physics.render = spy
        env.step(env.unwrapped._last_obs["state"])
        assert sorted(calls) == ["angle", "left_wrist"]
    finally:
        env.close()
    with pytest.raises(ValueError):
        AlohaEnv(cameras=("no_such_camera",))


def test_truncation_at_episode_limit():
    env = AlohaEnv(image_size=(8, 8), render_quality="flat", max_episode_steps=3)
    try:
        obs, _ = env.reset(seed=0)
        outs = [env.step(obs["state"]) for _ in range(3)]
        assert [o[3] for o in outs] == [False, False, True]
    finally:
        env.close()


def test_expert_first_50_steps_move_right_gripper_toward_cube():
    """Fast check of the plan: the right gripper approaches the cube and opens."""
    seed = 0
    poses = object_poses_for_seed("transfer_cube", seed)
    expert = AlohaExpert()
    actions = expert.plan("transfer_cube", object_poses=poses, verify=False)
    assert actions.shape == (400, 14) and actions.dtype == np.float32
    env = AlohaEnv(image_size=(8, 8), render_quality="flat")
    try:
        env.reset(seed=seed)
        physics = env.physics

        def dist():
            return np.linalg.norm(
                physics.named.data.xpos["vx300s_right/gripper_link"][:2] - physics.named.data.xpos["box"][:2]
            )

        d0 = dist()
        for a in actions[:50]:
            env.step(a)
        assert dist() < d0 - 0.02
        assert actions[49, 13] > actions[0, 13]  # right gripper opening
    finally:
        env.close()


def test_mocap_sim_holds_still_at_start():
    sim = MocapSim("transfer_cube")
    sim.reset(object_poses_for_seed("transfer_cube", 0))
    q0 = sim.physics.data.qpos[:16].copy()
    for _ in range(10):
        sim.step(sim.start[0], sim.start[1])
    assert np.abs(sim.physics.data.qpos[[0, 1, 2, 8, 9, 10]] - q0[[0, 1, 2, 8, 9, 10]]).max() < 0.02


def record(env_id: str, seed: int, **kw):
    """One expert demonstration on a tiny flat-shaded camera."""
    env = gym.make(env_id, cameras=("top",), image_size=(8, 8), render_quality="flat")
    try:
        return AlohaExpert().record(env, seed, **kw)
    finally:
        env.close()


def test_expert_transfer_cube_episode_succeeds():
    demo = record(TRANSFER, seed=0)
    assert demo.success
    t = demo.steps
    frames = demo.frames
    assert 100 < t <= 400
    assert frames["images"]["top"].shape == (t, 8, 8, 3) and frames["images"]["top"].dtype == np.uint8
    assert frames["state"].shape == (t, 14) and frames["state"].dtype == np.float32
    assert frames["action"].shape == (t, 14) and frames["action"].dtype == np.float32
    assert demo.instruction.startswith("pick up the red cube")
    # the plan pass keeps the arms off the forearm-roll / wrist-rotate null space (soft joint range)
    assert np.abs(frames["action"][:, [3, 5, 10, 12]]).max() < 2.0
    # with the roll held near 0 the right wrist's split is tight
    assert np.abs(frames["action"][:, [10, 12]]).max() < 0.7


def test_dart_replay_labels_stay_the_plan_while_the_arms_leave_it():
    clean = record(TRANSFER, seed=0)
    noisy = record(TRANSFER, seed=0, noise=0.1, noise_steps=60)
    t = min(clean.steps, noisy.steps)
    # the labels are the planned targets, perturbed or not
    np.testing.assert_array_equal(noisy.frames["action"][:t], clean.frames["action"][:t])
    np.testing.assert_array_equal(clean.executed, clean.frames["action"])
    pushed = np.abs(noisy.executed - noisy.frames["action"]).max(1)
    start = int(np.argmax(pushed > 0))
    assert pushed[:start].max(initial=0.0) == 0.0 and pushed.max() > 0.1
    # only arm joints are perturbed, the grippers follow the plan
    np.testing.assert_array_equal(noisy.executed[:, [6, 13]], noisy.frames["action"][:, [6, 13]])
    # the window ends: 60 steps later the perturbation decays (tau 0.3 s = 15 steps)
    if start + 60 + 100 < len(pushed):
        assert pushed[start + 60 + 100] < 0.01
    # and the arms really left the planned path: the state differs from the clean replay
    assert np.abs(noisy.frames["state"][:t] - clean.frames["state"][:t]).max() > 0.05


@pytest.mark.slow
def test_expert_insertion_episode_succeeds():
    assert record(INSERTION, seed=2).success
