"""How much a policy's sampled chunks disagree, per joint of the ALOHA right arm: at every STRIDE-th
frame of the first N episodes of an episode store, draw 8 chunks (noise seeds from 0) from the
recorded images and state, and print for joints 7-12 the standard deviation across the 8 samples of
each chunk's mean over its first 25 actions (mean and max over frames), the mean absolute error of
those chunk means against the expert's next 25 recorded actions, and the joint's label std.
Usage: .venv/bin/python docs/probes/sample_spread.py POLICY_DIR STORE N STRIDE"""
import sys, numpy as np, torch
torch.set_num_threads(2)
from components.episode_store import EpisodeStore
from components.policy import Policy
from _recorded import recorded_frames

pol = Policy.from_pretrained(sys.argv[1])
store = EpisodeStore.open(sys.argv[2])
n, stride = int(sys.argv[3]), int(sys.argv[4])
acts = store.lowdim("action")
joints = (7, 8, 9, 10, 11, 12)
spread = {j: [] for j in joints}
err = {j: [] for j in joints}
for t, frame in recorded_frames(store, n, stride, 25):
    chunks = pol.sample(frame, store.embodiment, frame["instruction"], num_samples=8, seed=0)[:, :25]
    for j in joints:
        means = chunks[:, :, j].mean(1)
        spread[j].append(means.std())
        err[j].append(np.abs(means - acts[t:t + 25, j].mean()).mean())
for j in joints:
    print(f"joint {j}: across-sample std of chunk mean {np.mean(spread[j]):.3f} (max {np.max(spread[j]):.3f}), "
          f"mean abs error {np.mean(err[j]):.3f}, label std {acts[:, j].std():.3f}")
