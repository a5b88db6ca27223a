"""ADE of a checkpoint's `video` predictions on 48 random frames of an episode store, against standing
still, and the true vs predicted forward position at 4 s of the first 8 (a training-fit check; docs/RESULTS.md).
Usage: python docs/probes/video_store_ade.py CHECKPOINT STORE.zarr"""
import sys

import numpy as np
import torch

torch.set_num_threads(1)
from components.policy import Policy
from components.episode_store import EpisodeStore
pol = Policy.from_pretrained(sys.argv[1])
s = EpisodeStore.open(sys.argv[2])
rng = np.random.default_rng(0)
ts = rng.choice(s.n_frames, 48, replace=False)
reqs, truth = [], []
for t in ts:
    fr = s.get_frame(int(t), ["images/front", "images/past"])
    reqs.append(({"images": fr["images"]}, "video", fr["instruction"])); truth.append(s.get_window(int(t), 8)[0])
out = pol.sample_batch(reqs, seeds=list(range(len(reqs))))
pred = np.stack([o.chunks[0] for o in out]); truth = np.stack(truth)
ade = np.linalg.norm(pred[..., :2] - truth[..., :2], axis=-1).mean()
still = np.linalg.norm(truth[..., :2], axis=-1).mean()
print(f"ADE model {ade:.3f}  standing still {still:.3f}")
print("speed true (x at 4s) vs pred:", np.c_[truth[:8, -1, 0], pred[:8, -1, 0]].round(2).tolist())
