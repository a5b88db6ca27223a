"""How much a policy's chunk follows one state entry: at every STRIDE-th frame of the first N
episodes of an episode store, sample one chunk (noise seed 0) from the recorded images and state
with state[JOINT] shifted by -DELTA and by +DELTA (everything else as recorded), and report the
gain d action / d state[JOINT] (mean over the first E actions of the chunk) for that action entry.
A gain near 1 means the policy carries the state entry over into its action (so an error in it
persists); near 0 means the action is set by the images and the rest of the state. Also prints the
largest gain on any other action entry.
Usage: .venv/bin/python docs/probes/state_sensitivity.py POLICY_DIR STORE N STRIDE E JOINT DELTA"""
import sys, numpy as np, torch
torch.set_num_threads(2)
from components.episode_store import EpisodeStore
from components.policy import Policy
from _recorded import recorded_frames

pol_dir, path = sys.argv[1], sys.argv[2]
n, stride, e, joint, delta = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
pol = Policy.from_pretrained(pol_dir)
store = EpisodeStore.open(path)
gains, others = [], []
for _, frame in recorded_frames(store, n, stride, e):
    chunks = []
    for sign in (-1.0, 1.0):
        obs = dict(frame, state=np.array(frame["state"], dtype=np.float64))
        obs["state"][joint] += sign * delta
        chunks.append(pol.sample(obs, store.embodiment, frame["instruction"], num_samples=1, seed=0)[0][:e])
    g = (chunks[1] - chunks[0]).mean(0) / (2 * delta)
    gains.append(g[joint])
    others.append(np.delete(np.abs(g), joint).max())
gains, others = np.array(gains), np.array(others)
print(f"{path}: {len(gains)} frames from {n} episodes, state[{joint}] +-{delta}, first {e} actions")
print(f"gain on action[{joint}]: mean {gains.mean():.3f}, median {np.median(gains):.3f}, "
      f"5-95 % [{np.percentile(gains, 5):.3f}, {np.percentile(gains, 95):.3f}]")
print(f"largest |gain| on another action entry: mean {others.mean():.3f}, max {others.max():.3f}")
