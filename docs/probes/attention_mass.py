"""Cross-attention mass of the decoder on camera tokens, per block and head, for one Fetch reach
observation. Usage: .venv/bin/python docs/probes/attention_mass.py POLICY_DIR. Results: docs/history.md."""
import sys, numpy as np, torch, gymnasium as gym
torch.set_num_threads(1)
import components.envs, components.dit as dit
from components.policy import Policy
pol = Policy.from_pretrained(sys.argv[1])
env = gym.make("vla_stack/FetchReach-v0")
o, info = env.reset(seed=0)
caps = []
orig = dit.F.scaled_dot_product_attention
def hook(q, k, v, attn_mask=None, **kw):
    if k.shape[-2] > 100:
        caps.append((q.detach(), k.detach(), attn_mask))
    return orig(q, k, v, attn_mask=attn_mask, **kw)
dit.F.scaled_dot_product_attention = hook
s = pol.processor.encode_observation(o["images"], o["state"], info["instruction"], "fetch")
ids = s["input_ids"]; img = ids == 5
pol.sample(o, "fetch", info["instruction"], num_samples=1, seed=0)
print("prefix len", len(ids), "image tokens", img.sum(), "n captured", len(caps))
for li, (q, k, m) in enumerate(caps[:4]):
    logits = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if m is not None:
        logits = logits.masked_fill(~m, float("-inf"))
    w = torch.softmax(logits, -1)  # [B,h,Q,L]
    L = len(ids)
    mass = w[..., :L][..., torch.from_numpy(img)].sum(-1).mean((0, 2))
    print("block", li, "attention mass on image tokens per head", np.round(mass.numpy(), 3))
