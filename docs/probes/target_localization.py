"""How precisely do the frozen stage-3 backbone's camera tokens locate the Fetch reach target?

Ridge regression (closed form) from the flattened camera tokens of the first frame of each episode
to the target position in metres, trained on episodes 0-159 of runs/g2/data/fetch_reach.zarr and
tested on episodes 160-199. The target position is recovered from the expert's unclipped actions
in frames 10-14 (the expert's action is 0.9 * (target - gripper) / 5 cm, clipped to [-1, 1]).
Compare the error with the 5 cm success radius. Needs runs/p3/cache15.pt (docs/probes/frame_weighting.py).
Usage (repo root): .venv/bin/python docs/probes/target_localization.py"""
import numpy as np, torch
from components.policy import Policy
from components.episode_store import EpisodeStore
pol = Policy.from_pretrained("runs/g3/pretrained"); p = pol.processor
C = torch.load("runs/p3/cache15.pt", weights_only=False)
H, B = C["H"].float(), C["B"]
img = B["input_ids"] == pol.vla.backbone.model.config.image_token_id
X = torch.stack([H[i][img[i]].flatten() for i in range(len(H))]).numpy()
acts = np.stack([p.decode_actions(B["actions"][i], "fetch")[0] for i in range(len(H))])
S = EpisodeStore.open("runs/g2/data/fetch_reach.zarr"); starts = np.r_[0, S.episode_ends[:-1]]
allst = S.lowdim("state").reshape(-1, 4)
st = np.stack([allst[int(starts[e]) + k] for e in range(200) for k in range(15)])
off = acts[:, :3] * 0.05 / 0.9
ok = (np.abs(acts[:, :3]) < 0.95).all(1)
goal = np.full((200, 3), np.nan)
for e in range(200):
    idx = [e * 15 + k for k in range(10, 15) if ok[e * 15 + k]]
    if idx:
        goal[e] = (st[idx, :3] + off[idx]).mean(0)
f0 = np.arange(0, len(H), 15); good = ~np.isnan(goal).any(1)
tr = good & (np.arange(200) < 160); te = good & (np.arange(200) >= 160)
print("episodes with a recovered target: train", tr.sum(), "test", te.sum(), "; target std (cm)", np.round(np.nanstd(goal, 0) * 100, 1))
base = np.linalg.norm(goal[te] - goal[tr].mean(0), axis=1)
for lam in (10.0, 100.0, 1000.0):
    A = X[f0][tr]; mu = A.mean(0); A = A - mu; y = goal[tr] - goal[tr].mean(0)
    W = A.T @ np.linalg.solve(A @ A.T + lam * np.eye(len(A)), y)
    err = np.linalg.norm((X[f0][te] - mu) @ W + goal[tr].mean(0) - goal[te], axis=1)
    print(f"ridge {lam:g}: held-out target error median {np.median(err) * 100:.1f} cm, within 5 cm {np.mean(err < 0.05):.2f}"
          f" (predicting the mean target: median {np.median(base) * 100:.1f} cm)")
