"""Train a fresh DiT decoder on frozen prefix features of 800 Fetch reach frames (shipped backbone) and
report the held-out first-action cosine. Usage: .venv/bin/python docs/probes/frozen_prefix_decoder.py
scratch STEPS pos|nopos LR. Needs the stage-2 Fetch reach store runs/g2/data/fetch_reach.zarr
(collect command in components/assets/default_policy/TRAINED_WITH.md). Results: docs/history.md."""
import sys, numpy as np, torch, gymnasium as gym, time, copy
torch.set_num_threads(2); torch.manual_seed(0)
import components.envs
from components.policy import Policy
from components.episode_store import EpisodeStore
from components.vla import flow_matching_loss
from probe_util import first_chunk, direction_cosine
pol = Policy.from_pretrained("components/assets/default_policy")
vla, p = pol.vla, pol.processor
s = EpisodeStore.open("runs/g2/data/fetch_reach.zarr")
ends = s.episode_ends; starts = np.r_[0, ends[:-1]]
samples = []
for e in range(200):
    for k in range(0, 10, 3):
        t = int(starts[e]) + k
        f = s.get_frame(t, ["state", "images/front", "images/side"])
        a, m = s.get_window(t, 10)
        smp = p.encode_observation(f["images"], f["state"], f["instruction"], "fetch")
        smp.update(p.encode_actions(a, m, "fetch"))
        samples.append(smp)
t0 = time.time()
with torch.no_grad():
    batches = [p.collate(samples[i:i + 50]) for i in range(0, len(samples), 50)]
    hidden = [vla.backbone(b["input_ids"], b["attention_mask"], b["pixel_values"], b["image_grid_thw"]) for b in batches]
print("prefix computed", time.time() - t0, "s for", len(samples))
H = torch.cat(hidden); B = {k: torch.cat([b[k] for b in batches]) for k in ("state", "state_mask", "dim_mask", "actions", "time_mask", "user_mask", "attention_mask")}
dec = copy.deepcopy(vla.decoder) if sys.argv[1] == "finetune" else type(vla.decoder)(vla.decoder.cfg)
import types
POS = len(sys.argv) > 3 and sys.argv[3] == "pos"
if POS:
    dec.prefix_pos = torch.nn.Embedding(512, dec.cfg.hidden); torch.nn.init.zeros_(dec.prefix_pos.weight)
    def cross_kv(self, prefix, mask):
        pos = (mask.long().cumsum(-1) - 1).clamp(0, 511)
        p = self.prefix_proj(prefix) + self.prefix_pos(pos)
        return [blk.cross_attn.keys_values(p) for blk in self.blocks]
else:
    def cross_kv(self, prefix, mask):
        return [blk.cross_attn.keys_values(self.prefix_proj(prefix)) for blk in self.blocks]
dec.cross_kv2 = types.MethodType(cross_kv, dec)
opt = torch.optim.AdamW(dec.parameters(), lr=float(sys.argv[4]) if len(sys.argv) > 4 else 5e-4)
def loss_fn(idx):
    kv = dec.cross_kv2(H[idx], B["user_mask"][idx].bool())
    return flow_matching_loss(lambda xt, t: dec(xt, t, B["state"][idx], B["state_mask"][idx], B["dim_mask"][idx], kv,
                                                B["user_mask"][idx].bool(), B["time_mask"][idx]),
                              B["actions"][idx], B["time_mask"][idx], B["dim_mask"][idx])
t0 = time.time()
for step in range(int(sys.argv[2])):
    idx = torch.randint(0, len(H), (32,))
    l = loss_fn(idx); opt.zero_grad(); l.backward(); opt.step()
    if step % 100 == 0: print(step, round(l.item(), 4), round(time.time() - t0, 1), "s", flush=True)
# held-out: first frames of seeds 1000-1019
vla.decoder = dec
env = gym.make("vla_stack/FetchReach-v0")
from components.envs.fetch_expert import FetchExpert
cos = []
for seed in range(1000, 1020):
    obs, info = env.reset(seed=seed); a = FetchExpert("reach").act(env.unwrapped.raw_obs)
    b = p.collate([p.encode_observation(obs["images"], obs["state"], info["instruction"], "fetch")])
    with torch.no_grad():
        h = vla.backbone(b["input_ids"], b["attention_mask"], b["pixel_values"], b["image_grid_thw"])
        kv = dec.cross_kv2(h, b["user_mask"].bool())
    out = first_chunk(lambda xt, t: dec(xt, t, b["state"], b["state_mask"], b["dim_mask"], kv, b["user_mask"].bool()), b["dim_mask"])
    cos.append(direction_cosine(p.decode_actions(out, "fetch"), a))
print("held-out mean cos", np.mean(cos))
