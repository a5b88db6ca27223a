# Full-size latency on a GPU machine (docs/RESULTS.md "The full-size model's chunk latency on one H100").
# Needs python3 with CUDA torch; wheels in .whl/ for what that machine lacks (transformers 5.24.0, zarr 3.1.6,
# numcodecs, donfig, google-crc32c) and .whl/fla/ (flash-linear-attention + fla-core 0.6.0). OUT: output folder.
OUT=${OUT:-runs/gpu_latency}; mkdir -p $OUT
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/fla .whl/fla/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee $OUT/log.txt
B='import sys; from stack.bench import bench_latency as b; b(model=sys.argv[1], embodiment=sys.argv[2], device="cuda", dtype="bfloat16", repeats=20, json=sys.argv[3])'
run() { timeout ${T:-110} python3 -c "$B" "$@" 2>&1 | grep -v -E "^\[transformers\]|Warning" | tee -a $OUT/log.txt; }
export PYTHONPATH=/tmp/fla:/tmp/site:$PWD
python3 -c "import fla, transformers, torch; print('fla', fla.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__)" 2>&1 | tail -1 | tee -a $OUT/log.txt
run full aloha $OUT/full_aloha_fla.json
run full fetch $OUT/full_fetch_fla.json
run full wheeled $OUT/full_wheeled_fla.json
export PYTHONPATH=/tmp/site:$PWD
echo "--- without flash-linear-attention (transformers' torch reference for Gated DeltaNet)" | tee -a $OUT/log.txt
T=150 run full aloha $OUT/full_aloha_torchref.json
T=60 run tiny aloha $OUT/tiny_aloha.json
