"""Copy a checkpoint with its floating-point weights stored as float16 (how the shipped default is
stored since issue 15; they load into the float32 model).

    .venv/bin/python docs/probes/cast_float16.py SRC_DIR DST_DIR
"""
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file

src, dst = sys.argv[1], sys.argv[2]
shutil.copytree(src, dst)
weights = load_file(f"{src}/model.safetensors")
cast = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in weights.items()}
err = max(float((cast[k].float() - v.float()).abs().max()) for k, v in weights.items() if v.is_floating_point())
save_file(cast, f"{dst}/model.safetensors", metadata={"format": "pt"})
print(f"{dst}: {len(cast)} tensors as float16, largest change {err:.2e}")
