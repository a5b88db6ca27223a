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
from components.policy import Policy

pol = Policy.from_pretrained(sys.argv[1])
g = zarr.open_group(sys.argv[2], mode="r")
n = int(sys.argv[3])
kwargs = g.attrs["collect"]["env_kwargs"]
env = gym.make(g.attrs["collect"]["env_id"], **kwargs)
ends = g["meta/episode_ends"][:]
seeds, states, actions = g["data/episode_seed"][:], g["data/state"][:], g["data/action"][:]
cam = g.attrs["cameras"][0]
checkpoints = (25, 50, 100, 150, 200)
for ep in range(n):
    start, end = (0 if ep == 0 else int(ends[ep - 1])), int(ends[ep])
    seed = int(seeds[start])
    obs, info = env.reset(seed=seed)
    same = np.array_equal(obs["images"][cam], g[f"data/images/{cam}"][start]) and np.allclose(obs["state"], states[start])
    for t in range(start, end):
        _, _, term, trunc, info = env.step(actions[t])
    replay = bool(info["is_success"])
    obs, info = env.reset(seed=seed)
    dev, best = {}, 0.0
    for t in range(end - start):
        if t % 25 == 0:
            chunk = pol.sample(obs, g.attrs["embodiment"], g.attrs["instructions"][ep], num_samples=1, seed=0)[0]
        obs, r, term, trunc, info = env.step(chunk[t % 25])
        best = max(best, float(r))
        if t + 1 in checkpoints and start + t + 1 < end:
            d = np.abs(obs["state"] - states[start + t + 1])
            dev[t + 1] = (round(float(d.max()), 3), int(d.argmax()))
        if term or trunc:
            break
    print(f"seed {seed}: env reproduces store {same}, replay succeeds {replay}; policy (max |joint - "
          f"recorded| (rad), which joint) at step {dev}; reward stage {best:g}", flush=True)
