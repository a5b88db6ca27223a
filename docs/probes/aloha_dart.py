"""The ALOHA transfer-cube expert replayed with DART noise (`AlohaExpert.record(noise=..., noise_steps=...)`,
as `collect --noise --noise_steps` does, without rendering): how many perturbed replays still
succeed, and how far the arms got from the planned targets (mean over episodes of the largest
|state - label| per action index; 6 and 13 are the grippers, which are not perturbed).
Usage: .venv/bin/python docs/probes/aloha_dart.py NOISE_RAD FIRST_SEED LAST_SEED_EXCL [WINDOW_STEPS|all]"""
import sys, time, numpy as np, gymnasium as gym
import components.envs
from components.envs.aloha_expert import AlohaExpert

noise, seeds = float(sys.argv[1]), range(int(sys.argv[2]), int(sys.argv[3]))
steps = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] != "all" else None
env_id = "vla_stack/AlohaTransferCube-v0"
env = gym.make(env_id, cameras=("top",), image_size=(8, 8), render_quality="flat")
expert, ok, dev, t0 = AlohaExpert(), 0, [], time.time()
for seed in seeds:
    out = expert.record(env, seed, noise=noise, noise_steps=steps)
    ok += out.success
    dev.append(np.abs(out.frames["state"] - out.frames["action"]).max(0))
print(f"noise {noise} rad, window {steps or 'whole replay'}: {ok}/{len(seeds)} replays succeed; "
      f"max |state - label| per index {np.round(np.mean(dev, 0), 2).tolist()}; {time.time() - t0:.0f} s")
