"""The simulator oracle on the real MuJoCo envs: imagining leaves the real episode bit-identical, and what
it imagines for a chunk is what executing the chunk really shows."""
import gymnasium as gym
import numpy as np
import pytest

import components.envs  # noqa: F401  (registers the envs)
from components.embodiment import Embodiments
from world_model.base import WorldModelMismatchError
from world_model.oracle import OracleWorldModel

SPECS = Embodiments.from_config_dir(["fetch", "aloha"])
CASES = {"fetch": ("vla_stack/FetchPush-v0", 8, 5), "aloha": ("vla_stack/AlohaTransferCube-v0", 4, 3)}


def _episode(env_id, actions, oracle=None, chunks=None, execute_steps=1):
    env = gym.make(env_id)
    try:
        obs, _ = env.reset(seed=7)
        seen = [obs]
        if oracle:
            oracle.begin_episode(env)
        for a in actions:
            if oracle:
                oracle.imagine([obs], chunks, SPECS[oracle_spec(env_id)], execute_steps)
            obs, *_ = env.step(a)
            seen.append(obs)
        return seen
    finally:
        env.close()


def oracle_spec(env_id):
    return "fetch" if "Fetch" in env_id else "aloha"


@pytest.mark.parametrize("name", ["fetch", "aloha"])
def test_imagining_leaves_the_real_episode_bit_identical(name):
    env_id, steps, execute = CASES[name]
    probe = gym.make(env_id)
    space = probe.action_space
    probe.close()
    rng = np.random.default_rng(0)
    mid = (space.low + space.high) / 2
    actions = [(mid + 0.3 * (space.high - space.low) * rng.uniform(-1, 1, space.shape)).astype(space.dtype)
               for _ in range(steps)]
    chunks = np.stack([np.stack([mid + 0.4 * (space.high - space.low) * rng.uniform(-1, 1, space.shape)
                                 for _ in range(execute)]) for _ in range(3)])
    plain = _episode(env_id, actions)
    imagined = _episode(env_id, actions, OracleWorldModel(), chunks, execute)
    for a, b in zip(plain, imagined, strict=True):
        assert np.array_equal(a["state"], b["state"])
        for cam in a["images"]:
            assert np.array_equal(a["images"][cam], b["images"][cam])


def test_what_the_oracle_imagines_is_what_executing_the_chunk_shows():
    spec = SPECS["fetch"]
    env = gym.make("vla_stack/FetchPush-v0")
    try:
        obs, _ = env.reset(seed=3)
        oracle = OracleWorldModel()
        oracle.check_compatible(spec, env)
        oracle.begin_episode(env)
        rng = np.random.default_rng(1)
        chunks = rng.uniform(-1.2, 1.2, (4, 10, 4)).astype(np.float32)  # beyond the limits: clipped alike
        im = oracle.imagine([obs], chunks, spec, execute_steps=8)
        assert im.steps == [2, 4, 6, 8] and im.latents.shape[:2] == (4, 4) and im.frames.shape[:2] == (4, 4)
        assert im.outcome.shape == (4,)
        k = 2
        real = {}
        for t in range(1, 9):
            obs, *_ = env.step(np.clip(chunks[k, t - 1], -1, 1).astype(np.float32))
            real[t] = obs
        for f, t in enumerate(im.steps):
            assert np.array_equal(oracle.encode(real[t], spec), im.latents[k, f])
        raw = env.unwrapped.raw_obs
        distance = np.linalg.norm(raw["achieved_goal"] - env.unwrapped.inner.goal)
        assert im.outcome[k] <= -distance + 1.0
    finally:
        env.close()


def test_the_oracle_refuses_an_env_without_a_simulator_state_copy():
    spec = Embodiments.from_config_dir(["wheeled"])["wheeled"]
    env = gym.make("vla_stack/WheeledHallway-v0")
    try:
        with pytest.raises(WorldModelMismatchError, match="has no simulator-state copy"):
            OracleWorldModel().check_compatible(spec, env)
    finally:
        env.close()
