"""Mean cosine between the policy's first three actions and the Fetch expert's first action over
20 seeds. Usage: .venv/bin/python docs/probes/first_action_cosine.py POLICY_DIR reach FIRST_SEED."""
import sys, numpy as np, torch, gymnasium as gym
torch.set_num_threads(1)
import components.envs
from components.policy import Policy
from components.envs.fetch_expert import FetchExpert
from probe_util import direction_cosine
pol = Policy.from_pretrained(sys.argv[1])
task = sys.argv[2] if len(sys.argv) > 2 else "reach"
env = gym.make({"reach": "vla_stack/FetchReach-v0", "push": "vla_stack/FetchPush-v0"}[task])
cos = []
for seed in range(int(sys.argv[3]) if len(sys.argv)>3 else 1000, (int(sys.argv[3]) if len(sys.argv)>3 else 1000)+20):
    obs, info = env.reset(seed=seed)
    e = FetchExpert(task); a = e.act(env.unwrapped.raw_obs)
    p = pol.sample(obs, "fetch", info["instruction"], num_samples=1, seed=0)[0]
    cos.append(direction_cosine(p, a))
print("mean cos(policy first 3 actions, expert)", np.mean(cos), np.round(cos, 2))
