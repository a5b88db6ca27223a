"""Copy a checkpoint with its slot adapter's output layer zeroed: the control arm that has the
adapter's slots in its state but cannot read them (docs/RESULTS.md, graph+vla without the subgoal).

    .venv/bin/python docs/probes/zero_slot_adapter.py SRC_DIR DST_DIR
"""
import shutil
import sys

from safetensors.torch import load_file, save_file

src, dst = sys.argv[1], sys.argv[2]
shutil.copytree(src, dst)
weights = load_file(f"{src}/model.safetensors")
last = max(int(k.split(".")[2]) for k in weights if k.startswith("decoder.slot_adapter."))
zeroed = [k for k in weights if k.startswith(f"decoder.slot_adapter.{last}.")]
if not zeroed:
    sys.exit(f"{src}: no decoder.slot_adapter weights to zero")
for k in zeroed:
    weights[k] = weights[k].new_zeros(weights[k].shape)
save_file(weights, f"{dst}/model.safetensors", metadata={"format": "pt"})
print(f"{dst}: zeroed {', '.join(zeroed)}")
