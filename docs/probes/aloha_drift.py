"""How far closed-loop ALOHA rollouts drift from the recorded expert episode of the same seed.
Checks first that the env reproduces the store (same first image and state, and replaying the
recorded actions succeeds), then runs the policy chunked (a new chunk every 25 steps, noise seed 0)
on the first N seeds of the store and prints the largest joint deviation (rad) from the recorded
state at a few steps with the index of that joint (0-6 left arm, 7-13 right arm; 6 and 13 are the
grippers), and the reward stage reached.
Usage: .venv/bin/python docs/probes/aloha_drift.py POLICY_DIR STORE N"""
import sys, numpy as np, torch, zarr, gymnasium as gym
torch.set_num_threads(2)
import components.envs
from components.episode_store import EpisodeStore
from components.policy import Policy

pol = Policy.from_pretrained(sys.argv[1])
store = EpisodeStore.open(sys.argv[2])
n = int(sys.argv[3])
collected = zarr.open_group(sys.argv[2], mode="r").attrs["collect"]  # env id and kwargs, written by collect
env = gym.make(collected["env_id"], **collected["env_kwargs"])
seeds, states, actions = store.lowdim("episode_seed"), store.lowdim("state"), store.lowdim("action")
cam = store.cameras[0]
checkpoints = (25, 50, 100, 150, 200)
for ep in range(n):
    rows = store.episode_slice(ep)
    start, end = rows.start, rows.stop
    seed = int(seeds[start])
    obs, info = env.reset(seed=seed)
    first = store.get_frame(start, [f"images/{cam}"])
    same = np.array_equal(obs["images"][cam], first["images"][cam]) and np.allclose(obs["state"], states[start])
    for t in range(start, end):
        _, _, term, trunc, info = env.step(actions[t])
    replay = bool(info["is_success"])
    obs, info = env.reset(seed=seed)
    dev, best = {}, 0.0
    for t in range(end - start):
        if t % 25 == 0:
            chunk = pol.sample(obs, store.embodiment, store.instructions[ep], num_samples=1, seed=0)[0]
        obs, r, term, trunc, info = env.step(chunk[t % 25])
        best = max(best, float(r))
        if t + 1 in checkpoints and start + t + 1 < end:
            d = np.abs(obs["state"] - states[start + t + 1])
            dev[t + 1] = (round(float(d.max()), 3), int(d.argmax()))
        if term or trunc:
            break
    print(f"seed {seed}: env reproduces store {same}, replay succeeds {replay}; policy (max |joint - "
          f"recorded| (rad), which joint) at step {dev}; reward stage {best:g}", flush=True)
