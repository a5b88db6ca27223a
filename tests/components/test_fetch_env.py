"""Fetch envs (gymnasium-robotics behind the project's observation contract) and their expert."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import components.envs  # noqa: F401  (registers the ids)
from components.envs.fetch_expert import FetchExpert

IDS = ["vla_stack/FetchReach-v0", "vla_stack/FetchPush-v0", "vla_stack/FetchPickAndPlace-v0"]
SMALL = (48, 64)


@pytest.mark.parametrize("env_id", IDS)
def test_check_env_and_contract(env_id):
    env = gym.make(env_id, image_size=SMALL)
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert obs["images"]["front"].shape == (*SMALL, 3) and obs["images"]["front"].dtype == np.uint8
    assert obs["state"].shape == (4,) and obs["state"].dtype == np.float32
    assert env.observation_space.contains(obs)
    assert env.action_space.shape == (4,)
    assert info["instruction"] == env.unwrapped.instruction and "red target" in info["instruction"]
    assert info["is_success"] in (True, False)
    assert env.spec.max_episode_steps == 50
    env.close()


def test_seeded_reset_is_reproducible_and_target_visible():
    env = gym.make("vla_stack/FetchPush-v0", image_size=SMALL)
    o1, _ = env.reset(seed=7)
    g1 = env.unwrapped.raw_obs["desired_goal"].copy()
    o2, _ = env.reset(seed=8)
    o3, _ = env.reset(seed=7)
    np.testing.assert_array_equal(o1["images"]["front"], o3["images"]["front"])
    np.testing.assert_array_equal(o1["state"], o3["state"])
    np.testing.assert_array_equal(g1, env.unwrapped.raw_obs["desired_goal"])
    assert not np.array_equal(o1["images"]["front"], o2["images"]["front"])
    img = o1["images"]["front"].astype(int)
    red = (img[..., 0] > 150) & (img[..., 1] < 60) & (img[..., 2] < 60)
    assert red.sum() >= 1, "the red goal site should be rendered"
    env.close()


def test_state_is_gripper_position_and_opening():
    env = gym.make("vla_stack/FetchPickAndPlace-v0", image_size=SMALL)
    obs, _ = env.reset(seed=1)
    raw = env.unwrapped.raw_obs["observation"]
    np.testing.assert_allclose(obs["state"][:3], raw[:3], atol=1e-5)
    np.testing.assert_allclose(obs["state"][3], raw[9] + raw[10], atol=1e-5)
    env.close()


def test_reach_expert_succeeds():
    env = gym.make("vla_stack/FetchReach-v0", image_size=SMALL)
    episode = FetchExpert("reach").record(env, seed=3)
    assert episode.success and episode.steps == 50
    assert episode.frames["action"].shape == (50, 4) and episode.frames["images"]["front"].shape == (50, *SMALL, 3)
    np.testing.assert_array_equal(episode.executed, episode.frames["action"])  # no noise: executed = labels
    env.close()


def test_two_cameras_see_the_target_from_different_sides():
    env = gym.make("vla_stack/FetchReach-v0", image_size=SMALL)
    obs, _ = env.reset(seed=3)
    assert set(obs["images"]) == {"front", "side"}
    front, side = obs["images"]["front"], obs["images"]["side"]
    assert front.shape == side.shape == (*SMALL, 3) and not np.array_equal(front, side)
    for img in (front, side):
        img = img.astype(int)
        assert ((img[..., 0] > 150) & (img[..., 1] < 60) & (img[..., 2] < 60)).sum() >= 1
    assert env.render().shape == (SMALL[0], 2 * SMALL[1], 3)
    # the marker is the 5 cm success sphere, not gymnasium-robotics' 2 cm dot
    dot = gym.make("vla_stack/FetchReach-v0", image_size=SMALL, marker_radius=0.02)
    o_dot, _ = dot.reset(seed=3)

    def red_pixels(img):
        img = img.astype(int)
        return int(((img[..., 0] > 150) & (img[..., 1] < 60) & (img[..., 2] < 60)).sum())

    assert red_pixels(front) > 3 * red_pixels(o_dot["images"]["front"]) > 0
    dot.close()
    only = gym.make("vla_stack/FetchReach-v0", image_size=SMALL, cameras=["side"])
    o2, _ = only.reset(seed=3)
    assert list(o2["images"]) == ["side"]
    np.testing.assert_array_equal(o2["images"]["side"], side)
    with pytest.raises(ValueError, match="unknown \\['top'\\].*known: \\['front', 'side'\\]"):
        gym.make("vla_stack/FetchReach-v0", cameras=["front", "top"])
    env.close()
    only.close()
