"""Paired table of `vla-stack nav --json` results on the same plans and seeds: per plan and arm the
successes, Wilson 95 % interval, SPL, collision steps, replans, and the exact McNemar p against the
first arm (seeds where only one of the two succeeds).

    .venv/bin/python docs/probes/nav_paired.py DIR ARM [ARM ...]    # reads DIR/<plan>_<ARM>.json
"""
import json
import sys
from pathlib import Path

from stack.results import mcnemar_exact, wilson_interval

PLANS = ["loop", "long_corridor", "clinic", "office_small", "house", "flat_two_bedroom"]
root, arms = Path(sys.argv[1]), sys.argv[2:]
print("| plan | arm | success | 95 % CI | SPL | collision steps | replans | only this / only first arm | McNemar p |")
print("|---|---|---|---|---|---|---|---|---|")
total = {a: [[], []] for a in arms}
for plan in PLANS:
    runs = {a: json.loads((root / f"{plan}_{a}.json").read_text()) for a in arms if (root / f"{plan}_{a}.json").exists()}
    if arms[0] not in runs:
        continue
    base = [e["success"] for e in runs[arms[0]]["per_episode"]]
    for a, r in runs.items():
        s = [e["success"] for e in r["per_episode"]]
        assert [e["seed"] for e in r["per_episode"]] == [e["seed"] for e in runs[arms[0]]["per_episode"]]
        total[a][0] += s
        total[a][1] += [e["spl"] for e in r["per_episode"]]
        lo, hi = wilson_interval(sum(s), len(s))
        only = f"{sum(x and not y for x, y in zip(s, base))} / {sum(y and not x for x, y in zip(s, base))}"
        p = f"{mcnemar_exact(s, base):.3g}" if a != arms[0] else ""
        print(f"| {plan} | {a} | {sum(s)}/{len(s)} | [{lo:.2f}, {hi:.2f}] | {r['spl']:.2f} | {r['collisions']} | "
              f"{r['replans']} | {only if a != arms[0] else ''} | {p} |")
base = total[arms[0]][0]
for a, (s, spl) in total.items():
    if len(s) != len(base):
        print(f"| all | {a} | {sum(s)}/{len(s)} (not every plan) | | | | | | |")
        continue
    lo, hi = wilson_interval(sum(s), len(s))
    only = f"{sum(x and not y for x, y in zip(s, base))} / {sum(y and not x for x, y in zip(s, base))}"
    p = f"{mcnemar_exact(s, base):.3g}" if a != arms[0] else ""
    print(f"| **all** | {a} | **{sum(s)}/{len(s)}** | [{lo:.2f}, {hi:.2f}] | {sum(spl) / len(spl):.2f} | | | "
          f"{only if a != arms[0] else ''} | {p} |")
