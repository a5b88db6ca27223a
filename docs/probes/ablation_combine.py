"""Join `vla-stack ablate` runs over disjoint seed ranges (same arms) into one paired table: per arm the
successes, Wilson 95 % interval, and exact two-sided McNemar against the first arm on all seeds.
Usage: python docs/probes/ablation_combine.py DIR1/ablation.json DIR2/ablation.json ..."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from stack.results import mcnemar_exact, wilson_interval  # noqa: E402

runs = [json.loads(Path(p).read_text()) for p in sys.argv[1:]]
names = [a["name"] for a in runs[0]["arms"]]
per = {n: [] for n in names}
for run in runs:
    for arm in run["arms"]:
        per[arm["name"]] += [bool(x) for x in arm["per_seed_success"]]
base = per[names[0]]
print("| arm | success | 95 % CI | only this arm / only first | McNemar p |")
print("|---|---|---|---|---|")
for n in names:
    s = per[n]
    lo, hi = wilson_interval(sum(s), len(s))
    b = sum(x and not y for x, y in zip(s, base))
    c = sum(y and not x for x, y in zip(s, base))
    p = mcnemar_exact(s, base)
    print(f"| {n} | {sum(s)}/{len(s)} | [{lo:.2f}, {hi:.2f}] | {b} / {c} | {p:.3g} |")
