"""Direct regression of the first Fetch reach action from the flattened camera tokens of frozen
backbone outputs (not a decoder): the ceiling the decoder variants in readout_variants.py are
compared with. Needs the cache written by readout_variants.py (runs/p2/cache.pt). Results: docs/history.md.
Usage (repo root): .venv/bin/python docs/probes/direct_regression.py"""
import sys, numpy as np, torch
torch.set_num_threads(2); torch.manual_seed(0)
C = torch.load("runs/p2/cache.pt", weights_only=False)
H, B, ks = C["H"], C["B"], C["ks"]
img = B["input_ids"][0] == 5
print("camera tokens", int(img.sum()))
X = H[:, img].flatten(1); SL = torch.nonzero(B["dim_mask"][0])[:3, 0]; print("slots", SL); Y = B["actions"][:, 0, SL]
Xte = torch.cat([h[:, (b["input_ids"][0] == 5)].flatten(1) for h, b in zip(C["hs"], C["hb"])])
Ate = torch.tensor(C["acts"][:, :3])
mu, sd = X.mean(0), X.std(0) + 1e-5
Xn, Xten = (X - mu) / sd, (Xte - mu) / sd
# also: state
S = B["state"]; Ste = torch.cat([b["state"] for b in C["hb"]])
print("feature std spectrum (raw):", torch.linalg.svdvals(X - X.mean(0))[:10].numpy().round(2), "... min", torch.linalg.svdvals(X - X.mean(0))[-10:].numpy().round(4))
for name, Xa, Xb in [("raw", X, Xte), ("std", Xn, Xten)]:
    for kind in ("linear", "mlp"):
        torch.manual_seed(0)
        m = torch.nn.Linear(Xa.shape[1], 3) if kind == "linear" else torch.nn.Sequential(torch.nn.Linear(Xa.shape[1], 256), torch.nn.GELU(), torch.nn.Linear(256, 3))
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.01)
        for step in range(1500):
            idx = torch.randint(0, len(Xa), (32,))
            l = ((m(Xa[idx]) - Y[idx]) ** 2).mean(); opt.zero_grad(); l.backward(); opt.step()
        with torch.no_grad():
            pr = m(Xb); cos = torch.nn.functional.cosine_similarity(pr, Ate, dim=1).mean()
            trl = ((m(Xa) - Y) ** 2).mean()
        print(name, kind, "train mse", round(trl.item(), 4), "label var", round(Y.var(0).mean().item(), 4), "held-out first-frame cos", round(cos.item(), 3))
