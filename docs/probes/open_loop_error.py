"""Open-loop error of a policy on recorded expert frames: at every STRIDE-th frame of the first N
episodes of an episode store, sample one chunk (noise seed 0) from the recorded images and state and
compare its first E actions with the expert's next E recorded actions. Prints the mean absolute
error per action dim divided by that dim's standard deviation over the store's actions (always
predicting a dim's mean gives its mean absolute deviation over its std, about 0.8 for a Gaussian),
next to the same number for "repeat the expert's
action at this frame" (a trivial baseline that knows the current expert action).
Usage: .venv/bin/python docs/probes/open_loop_error.py POLICY_DIR STORE N STRIDE E"""
import sys, numpy as np, torch
torch.set_num_threads(2)
from components.episode_store import EpisodeStore
from components.policy import Policy
from _recorded import recorded_frames

pol_dir, path, n, stride, e = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
pol = Policy.from_pretrained(pol_dir)
store = EpisodeStore.open(path)
actions = store.lowdim("action")
std = actions.std(0)
keep = std > 1e-4  # dims the expert never moves (Fetch's gripper in push) are left out
std = std[keep]
pol_err, hold_err = [], []
for t, frame in recorded_frames(store, n, stride, e):
    chunk = pol.sample(frame, store.embodiment, frame["instruction"], num_samples=1, seed=0)[0][:e]
    truth = actions[t:t + e]
    pol_err.append(np.abs(chunk - truth).mean(0)[keep] / std)
    hold_err.append(np.abs(actions[t][None] - truth).mean(0)[keep] / std)
pol_err, hold_err = np.array(pol_err), np.array(hold_err)
print(f"{path}: {len(pol_err)} frames from {n} episodes, first {e} actions, {int(keep.sum())} of {keep.size} dims")
print("policy   normalized MAE per dim", np.round(pol_err.mean(0), 3), "mean", round(float(pol_err.mean()), 3))
print("hold-a_t normalized MAE per dim", np.round(hold_err.mean(0), 3), "mean", round(float(hold_err.mean()), 3))
