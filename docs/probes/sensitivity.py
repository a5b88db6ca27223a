"""How much does the sampled chunk change when the camera images change (target elsewhere / black)
versus another noise seed? Usage: .venv/bin/python docs/probes/sensitivity.py POLICY_DIR. Results: docs/history.md."""
import sys, numpy as np, torch, gymnasium as gym
torch.set_num_threads(1)
import components.envs
from components.policy import Policy
pol = Policy.from_pretrained(sys.argv[1])
env = gym.make("vla_stack/FetchReach-v0")
obs, info = env.reset(seed=0)
obs2, _ = env.reset(seed=7)
base = pol.sample(obs, "fetch", info["instruction"], num_samples=1, seed=0)[0]
other = pol.sample({"images": obs2["images"], "state": obs["state"]}, "fetch", info["instruction"], num_samples=1, seed=0)[0]
black = pol.sample({"images": {k: np.zeros_like(v) for k, v in obs["images"].items()}, "state": obs["state"]}, "fetch", info["instruction"], num_samples=1, seed=0)[0]
noise2 = pol.sample(obs, "fetch", info["instruction"], num_samples=1, seed=1)[0]
print("other-target image diff", np.abs(base - other).mean(), "black image diff", np.abs(base - black).mean(), "noise-seed diff", np.abs(base - noise2).mean())
print(base[:3], other[:3])
