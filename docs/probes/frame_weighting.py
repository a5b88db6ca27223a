"""Which training frames let the real decoder (components/dit.py) read the Fetch reach target.

Trains a fresh ``DiT`` (with the image readout, as configured in the tiny model) on the frozen
stage-3 backbone's outputs for frames of 200 Fetch reach episodes, 600 steps, batch 32, lr 5e-4,
torch seed 0, with the training loss of ``VLA.loss``; then samples the first chunk on the first frame
of held-out seeds 1000-1039 (noise seed 0, 10 Euler steps) and reports the mean cosine between the
first three predicted (dx, dy, dz) and the expert's first action (as readout_variants.py does).

Usage (repo root): [FRAMES=0,3,6,9] [W0=5] [PDROP=0.5] .venv/bin/python docs/probes/frame_weighting.py [STEPS]
  FRAMES  which frames of each episode to train on (default 0-14)
  W0      sampling weight of frame-0 samples relative to the others (default 1)
  PDROP   probability of zeroing the proprioceptive state of a training sample (default 0)
Needs runs/g2/data/fetch_reach.zarr (collect command in components/assets/default_policy/TRAINED_WITH.md),
the stage-3 checkpoint runs/g3/pretrained (PROBE_POLICY=DIR for another) and the held-out cache of
readout_variants.py (runs/p2/cache.pt). Writes runs/p3/cache15.pt (backbone outputs, ~40 s).
docs/history.md, "Stage 5", has the table."""
import copy, os, sys, time
import numpy as np, torch
torch.set_num_threads(2)
from components.dit import DiT
from components.vla import flow_matching_loss
from probe_util import first_chunk, direction_cosine
from components.policy import Policy
from components.episode_store import EpisodeStore

pol = Policy.from_pretrained(os.environ.get("PROBE_POLICY", "runs/g3/pretrained")); vla, p = pol.vla, pol.processor
CACHE = "runs/p3/cache15.pt"
if not os.path.exists(CACHE):
    s = EpisodeStore.open("runs/g2/data/fetch_reach.zarr")
    starts = np.r_[0, s.episode_ends[:-1]]
    samples, ks = [], []
    for e in range(200):
        for k in range(15):
            f = s.get_frame(int(starts[e]) + k, ["state", "images/front", "images/side"])
            a, m = s.get_window(int(starts[e]) + k, 10)
            smp = p.encode_observation(f["images"], f["state"], f["instruction"], "fetch")
            smp.update(p.encode_actions(a, m, "fetch")); samples.append(smp); ks.append(k)
    Hs, Bs = [], []
    with torch.no_grad():
        for i in range(0, len(samples), 50):
            b = p.collate(samples[i:i + 50])
            Hs.append(vla.backbone(b["input_ids"], b["attention_mask"], b["pixel_values"], b["image_grid_thw"]).half())
            Bs.append({k: b[k] for k in ("state", "state_mask", "dim_mask", "actions", "time_mask", "user_mask", "input_ids")})
    os.makedirs(os.path.dirname(CACHE), exist_ok=True)
    torch.save({"H": torch.cat(Hs), "B": {k: torch.cat([b[k] for b in Bs]) for k in Bs[0]}, "ks": torch.tensor(ks)}, CACHE)
torch.manual_seed(0)
C = torch.load("runs/p2/cache.pt", weights_only=False)  # held-out first frames (readout_variants.py)
C15 = torch.load(CACHE, weights_only=False)
H, B, ks = C15["H"].float(), C15["B"], C15["ks"]
STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 600
FR = [int(x) for x in os.environ["FRAMES"].split(",")] if os.environ.get("FRAMES") else list(range(15))
W0, PDROP = float(os.environ.get("W0", "1")), float(os.environ.get("PDROP", "0"))
sel = torch.nonzero(torch.isin(ks, torch.tensor(FR)))[:, 0]
wts = torch.where(ks[sel] == 0, W0, 1.0)
print("frames", FR, "samples", len(sel), "W0", W0, "PDROP", PDROP)
cfg = copy.deepcopy(vla.decoder.cfg); cfg.image_readout, cfg.readout_dim = 64, 32  # configs/model/tiny.yaml
dec = DiT(cfg)
opt = torch.optim.AdamW(dec.parameters(), lr=5e-4)
IMG = vla.backbone.model.config.image_token_id
t0 = time.time()
for step in range(STEPS):
    idx = sel[torch.multinomial(wts, 32, replacement=True)]
    kv, cond = dec.encode_prefix(H[idx], B["input_ids"][idx] == IMG)
    def velocity(xt, t):  # the state-dropout draw comes after t and the noise, as it always did
        keep = (torch.rand(len(idx), 1) >= PDROP).float()
        return dec(xt, t, B["state"][idx] * keep, B["state_mask"][idx] * keep, B["dim_mask"][idx], kv,
                   B["user_mask"][idx].bool(), B["time_mask"][idx], cond)
    loss = flow_matching_loss(velocity, B["actions"][idx], B["time_mask"][idx], B["dim_mask"][idx])
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 100 == 0:
        print(step, round(loss.item(), 4), round(time.time() - t0, 1), "s", flush=True)
cos = []
for hh, b, act in zip(C["hs"], C["hb"], C["acts"]):
    with torch.no_grad():
        kv, cond = dec.encode_prefix(hh, b["input_ids"] == IMG)
    out = first_chunk(lambda xt, t: dec(xt, t, b["state"], b["state_mask"], b["dim_mask"], kv, b["user_mask"].bool(), None, cond),
                      b["dim_mask"])
    cos.append(direction_cosine(p.decode_actions(out, "fetch"), act))
print(f"FRAMES={os.environ.get('FRAMES', '0-14')} W0={W0} PDROP={PDROP} steps {STEPS}: held-out first-frame mean cos {np.mean(cos):.3f}")
