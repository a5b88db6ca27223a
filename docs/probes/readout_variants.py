"""How can the DiT read the Fetch reach target from frozen backbone features? Variants of
frozen_prefix_decoder.py: a fresh decoder trained on the stage-3 backbone's outputs for 800 Fetch
reach frames, then the first action's cosine to the expert's on held-out seeds 1000-1039 (and on
training first frames). docs/history.md (Stage 4) has the table; the ``flat`` family became the
image readout in components/dit.py.

Usage (repo root): .venv/bin/python docs/probes/readout_variants.py STEPS STATE COND FRAMES [LR] [READ]
  STATE  keep | drop    drop zeroes the proprioceptive state (tests the copycat shortcut)
  COND   cross | film | both   cross-attention only / conditioning vector only / both
  FRAMES all | first    train on frames 0,3,6,9 of each episode, or on frame 0 only
  READ   mean | flat | flat16 | query   how the conditioning vector reads the camera tokens:
         their mean; all 32 side by side (MLP); each projected to 16 numbers, side by side (MLP);
         8 learned queries attending to them
Needs runs/g2/data/fetch_reach.zarr (collect command in components/assets/default_policy/TRAINED_WITH.md)
and a checkpoint: PROBE_POLICY=DIR (default components/assets/default_policy). The recorded numbers used the
stage-3 checkpoint (runs/g3/pretrained; the default policy at commit 76159ca). Caches runs/p2/cache.pt."""
import sys, os, numpy as np, torch, gymnasium as gym, time, copy
torch.set_num_threads(2); torch.manual_seed(0)
import components.envs
from components.policy import Policy
from components.episode_store import EpisodeStore
from components.vla import flow_matching_loss
from probe_util import first_chunk, direction_cosine
pol = Policy.from_pretrained(os.environ.get("PROBE_POLICY", "components/assets/default_policy"))
vla, p = pol.vla, pol.processor
CACHE = "runs/p2/cache.pt"  # features of the checkpoint below; delete it after changing the checkpoint
if not os.path.exists(CACHE):
    s = EpisodeStore.open("runs/g2/data/fetch_reach.zarr")
    ends = s.episode_ends; starts = np.r_[0, ends[:-1]]
    samples, ks = [], []
    for e in range(200):
        for k in range(0, 10, 3):
            t = int(starts[e]) + k
            f = s.get_frame(t, ["state", "images/front", "images/side"])
            a, m = s.get_window(t, 10)
            smp = p.encode_observation(f["images"], f["state"], f["instruction"], "fetch")
            smp.update(p.encode_actions(a, m, "fetch"))
            samples.append(smp); ks.append(k)
    with torch.no_grad():
        batches = [p.collate(samples[i:i + 50]) for i in range(0, len(samples), 50)]
        hidden = [vla.backbone(b["input_ids"], b["attention_mask"], b["pixel_values"], b["image_grid_thw"]) for b in batches]
    H = torch.cat(hidden); B = {k: torch.cat([b[k] for b in batches]) for k in ("state", "state_mask", "dim_mask", "actions", "time_mask", "user_mask", "attention_mask", "input_ids")}
    # held-out first frames
    env = gym.make("vla_stack/FetchReach-v0")
    from components.envs.fetch_expert import FetchExpert
    hs, hb, acts = [], [], []
    for seed in range(1000, 1040):
        obs, info = env.reset(seed=seed); acts.append(FetchExpert("reach").act(env.unwrapped.raw_obs))
        b = p.collate([p.encode_observation(obs["images"], obs["state"], info["instruction"], "fetch")])
        with torch.no_grad():
            hs.append(vla.backbone(b["input_ids"], b["attention_mask"], b["pixel_values"], b["image_grid_thw"])); hb.append(b)
    torch.save({"H": H, "B": B, "ks": torch.tensor(ks), "hs": hs, "hb": hb, "acts": np.array(acts)}, CACHE)
C = torch.load(CACHE, weights_only=False)
H, B, ks = C["H"], C["B"], C["ks"]
STEPS, STATE, COND, FRAMES = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
LR = float(sys.argv[5]) if len(sys.argv) > 5 else 5e-4
# DEC=trained starts from the checkpoint's decoder (fine-tuning) instead of a fresh one; ZERO=1 starts
# the conditioning MLP's last layer at zero (as the shipped readout does)
dec = copy.deepcopy(vla.decoder) if os.environ.get("DEC") == "trained" else type(vla.decoder)(vla.decoder.cfg)
h = dec.cfg.hidden
film = torch.nn.Sequential(torch.nn.Linear(h, h), torch.nn.SiLU(), torch.nn.Linear(h, h))
M = 8
flat = torch.nn.Sequential(torch.nn.Linear(32 * h, h), torch.nn.SiLU(), torch.nn.Linear(h, h))
proj16 = torch.nn.Linear(h, 16); flat16 = torch.nn.Sequential(torch.nn.Linear(32 * 16, h), torch.nn.SiLU(), torch.nn.Linear(h, h))
queries = torch.nn.Parameter(torch.randn(1, M, h) * 0.02)
qattn = torch.nn.MultiheadAttention(h, 4, batch_first=True)
qout = torch.nn.Sequential(torch.nn.Linear(M * h, h), torch.nn.SiLU(), torch.nn.Linear(h, h))
if os.environ.get("ZERO") == "1":
    for mlp in (film, flat, flat16, qout):
        torch.nn.init.zeros_(mlp[2].weight); torch.nn.init.zeros_(mlp[2].bias)
params = list(dec.parameters()) + list(film.parameters()) + list(flat.parameters()) + [queries] + list(proj16.parameters()) + list(flat16.parameters()) + list(qattn.parameters()) + list(qout.parameters())
READ = sys.argv[6] if len(sys.argv) > 6 else "mean"
def cond_c(prefix, mask, ids):
    pp = dec.prefix_proj(prefix)
    img = (ids == 5).float()[..., None]
    if READ == "mean":
        return pp, film((pp * img).sum(1) / img.sum(1))
    if READ == "flat16":
        return pp, flat16(proj16(pp[:, (ids[0] == 5)]).flatten(1))
    if READ == "flat":
        return pp, flat(pp[:, (ids[0] == 5)].flatten(1))
    y, _ = qattn(queries.expand(len(pp), -1, -1), pp, pp, key_padding_mask=~mask)
    return pp, qout(y.flatten(1))
# monkeypatch forward to add film conditioning to c
import components.dit as D
def fwd(x_t, t, state, state_mask, dim_mask, kv, prefix_mask, extra_c, time_mask=None):
    b, horizon, d = x_t.shape
    dm = dim_mask.to(x_t.dtype)
    act = dec.action_in(torch.cat([x_t, dm[:, None].expand(b, horizon, d)], dim=-1))
    st = dec.state_in(torch.cat([state, state_mask.to(x_t.dtype)], dim=-1))[:, None]
    x = torch.cat([st, act], dim=1) + dec.pos[:, : 1 + horizon]
    token_mask = None
    if time_mask is not None:
        token_mask = torch.cat([torch.ones(b, 1, dtype=torch.bool), time_mask.bool()], dim=1)
    c = dec.time_mlp(D.timestep_embedding(t, h))
    if COND in ("film", "both"): c = c + extra_c
    for blk, kvb in zip(dec.blocks, kv):
        if COND == "film":
            kvb = (kvb[0], kvb[1])
        x = blk(x, c, kvb, token_mask, prefix_mask)
    shift, scale = dec.final_ada(c).chunk(2, dim=-1)
    return dec.final(D.modulate(dec.final_norm(x[:, 1:]), shift, scale))
def prep(prefix, mask, ids, state, smask):
    pp, ec = cond_c(prefix, mask, ids)
    kv = [blk.cross_attn.keys_values(pp) for blk in dec.blocks]
    if COND == "film":  # no cross-attention: mask all but one token
        mask = torch.zeros_like(mask); mask[:, 0] = True
    if STATE == "drop":
        state = torch.zeros_like(state); smask = torch.zeros_like(smask)
    return kv, mask, ec, state, smask
sel = torch.arange(len(H)) if FRAMES == "all" else torch.nonzero(ks == 0)[:, 0]
opt = torch.optim.AdamW(params, lr=LR)
t0 = time.time()
for step in range(STEPS):
    idx = sel[torch.randint(0, len(sel), (32,))]
    kv, pm, ec, st, sm = prep(H[idx], B["user_mask"][idx].bool(), B["input_ids"][idx], B["state"][idx], B["state_mask"][idx])
    l = flow_matching_loss(lambda xt, t: fwd(xt, t, st, sm, B["dim_mask"][idx], kv, pm, ec, B["time_mask"][idx]),
                           B["actions"][idx], B["time_mask"][idx], B["dim_mask"][idx])
    opt.zero_grad(); l.backward(); opt.step()
    if step % 100 == 0: print(step, round(l.item(), 4), round(time.time() - t0, 1), "s", flush=True)
def evalcos(hs, hb, acts):
    cos = []
    for hh, b, a in zip(hs, hb, acts):
        with torch.no_grad():
            kv, pm, ec, st, sm = prep(hh, b["user_mask"].bool(), b["input_ids"], b["state"], b["state_mask"])
        out = first_chunk(lambda xt, t: fwd(xt, t, st, sm, b["dim_mask"], kv, pm, ec), b["dim_mask"])
        cos.append(direction_cosine(p.decode_actions(out, "fetch"), a))
    return np.mean(cos)
print(sys.argv[1:], "held-out first-frame mean cos", round(evalcos(C["hs"], C["hb"], C["acts"]), 3))
# training first frames
tr = torch.nonzero(ks == 0)[:40, 0]
hb = [{k: B[k][i:i+1] for k in B} for i in tr.tolist()]
acts_tr = [p.decode_actions(B["actions"][i], "fetch")[0] for i in tr.tolist()]
print(sys.argv[1:], "train first-frame mean cos", round(evalcos([H[i:i+1] for i in tr.tolist()], hb, acts_tr), 3))
