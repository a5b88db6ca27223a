"""Does the backbone output hold the Fetch reach target? Ridge regression from the camera tokens' last
hidden states (300 train seeds) to the goal-gripper offset, R2 on seeds 1000-1099. Results: docs/history.md.
Run from the repo root: .venv/bin/python docs/probes/linear_probe.py"""
import numpy as np, torch, gymnasium as gym
torch.set_num_threads(2)
import components.envs
from components.policy import Policy
from components.envs.fetch_expert import FetchExpert
pol = Policy.from_pretrained(__import__("sys").argv[1] if len(__import__("sys").argv) > 1 else "components/assets/default_policy"); vla, p = pol.vla, pol.processor
env = gym.make("vla_stack/FetchReach-v0")
def feats(seeds):
    X, Y, G = [], [], []
    for seed in seeds:
        obs, info = env.reset(seed=seed)
        raw = env.unwrapped.raw_obs; Y.append(FetchExpert("reach").act(raw)[:3]); G.append(raw["desired_goal"] - raw["achieved_goal"])
        b = p.collate([p.encode_observation(obs["images"], obs["state"], info["instruction"], "fetch")])
        with torch.no_grad():
            h = vla.backbone(b["input_ids"], b["attention_mask"], b["pixel_values"], b["image_grid_thw"])[0]
            pp = vla.decoder.prefix_proj(h[None])[0]
        img = b["input_ids"][0] == 5
        X.append(np.concatenate([h[img].flatten().numpy(), pp[img].flatten().numpy()]))
    return np.array(X), np.array(Y), np.array(G)
Xtr, Ytr, Gtr = feats(range(300)); Xte, Yte, Gte = feats(range(1000, 1100))
for name, sl in [("LM out", slice(0, 32 * 128)), ("after prefix_proj", slice(32 * 128, None))]:
    A, B = Xtr[:, sl], Xte[:, sl]
    mu, sd = A.mean(0), A.std(0) + 1e-6; A = (A - mu) / sd; B = (B - mu) / sd
    for lam in (10.0, 100.0, 1000.0):
        W = np.linalg.solve(A.T @ A + lam * np.eye(A.shape[1]), A.T @ Gtr)
        pred = B @ W
        r2 = 1 - ((pred - Gte) ** 2).sum(0) / ((Gte - Gte.mean(0)) ** 2).sum(0)
        print(name, "ridge", lam, "held-out R2 of goal-gripper offset (x,y,z)", np.round(r2, 2))
