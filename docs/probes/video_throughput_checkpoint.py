"""A copy of a checkpoint with the `video` spec added, for timing predict-trajectory before any
checkpoint is trained on video: the same network and input size, untrained predictions (RESULTS,
"Trajectory prediction on video"). Usage: python docs/probes/video_throughput_checkpoint.py SRC OUT"""
import json
import shutil
import sys
from pathlib import Path

import yaml

from components.normalization import stats_digest

src, out = Path(sys.argv[1]), Path(sys.argv[2])
shutil.copytree(src, out)
embodiments = yaml.safe_load((out / "embodiments.yaml").read_text())
embodiments["embodiments"].append(yaml.safe_load(Path("configs/embodiments/video.yaml").read_text()))
(out / "embodiments.yaml").write_text(yaml.safe_dump(embodiments, sort_keys=False))
stats = json.loads((out / "norm_stats.json").read_text())
stats["video"] = {"action": stats["wheeled"]["action"]}  # the same four waypoint slots
text = json.dumps(stats, indent=2, sort_keys=True) + "\n"
(out / "norm_stats.json").write_text(text)
config = json.loads((out / "config.json").read_text())
(out / "config.json").write_text(json.dumps({**config, "norm_stats_sha256": stats_digest(text)}, indent=2))
