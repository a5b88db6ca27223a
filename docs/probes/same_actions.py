"""Do two checkpoints give the same chunks, bit for bit, for the embodiments they share? (Stage 11
adds a slot adapter; aloha, fetch and wheeled must decode exactly as before.)

    .venv/bin/python docs/probes/same_actions.py DIR_A DIR_B [EMBODIMENT ...]
"""
import sys

import numpy as np

from components.policy import Policy

a, b = Policy.from_pretrained(sys.argv[1]), Policy.from_pretrained(sys.argv[2])
names = sys.argv[3:] or sorted(set(a.embodiments) & set(b.embodiments) - {"wheeled_nav"})
rng = np.random.default_rng(0)
for name in names:
    spec = a.processor.embodiments[name]
    worst = 0.0
    for i in range(5):
        obs = {"images": {c.name: rng.integers(0, 256, (c.height, c.width, 3), dtype=np.uint8) for c in spec.cameras},
               "state": rng.uniform(-1, 1, len(spec.state_slots)).astype(np.float32)}
        x = a.sample(obs, name, "do the task", num_samples=4, seed=i)
        y = b.sample(obs, name, "do the task", num_samples=4, seed=i)
        worst = max(worst, float(np.abs(x - y).max()))
    print(f"{name}: max |a - b| over 5 observations x 4 samples = {worst}")
