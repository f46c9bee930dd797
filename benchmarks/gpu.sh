#!/usr/bin/env bash
# Real-size benchmarks on a CUDA GPU, one command:   bash benchmarks/gpu.sh   (from anywhere in the checkout)
#
# Builds Stable Diffusion 1.5's exact architecture from its published configs with random weights
# (sdexplain.architectures.build_pipeline("sd15"): the real model's compute cost, nothing downloaded),
# in float16 at 512x512 with 25 steps, and runs benchmarks 1, 2 and 4 of benchmarks/run_all.py:
# trace overhead, batched CFG sweep vs 8 stock calls, and scaling 256 -> 768 px.
# Writes benchmarks/results-gpu.md and its scaling plot next to it. Extra arguments go to run_all.py
# (e.g. --quick, or --repeats 10). Sets up .venv with `make setup` first if there is none.
# Then SDXL base's layout (build_pipeline("sdxl"), random weights, 3.47 B parameters) at 1024x1024,
# float16, 25 steps: peak GPU memory and time stock, traced (same image checked) and with
# enable_model_cpu_offload() -> benchmarks/results-sdxl-gpu.md (benchmarks/sdxl_memory.py).
#
#   bash benchmarks/gpu.sh --sdxl [--steps 10 ...]
# runs only the SDXL measurement (extra arguments go to sdxl_memory.py).
#
#   bash benchmarks/gpu.sh --notebooks [04 09 ...]
# instead executes notebooks 01, 03, 04, 09 and 14 (or those named) on the same SD-1.5 layout with
# random weights, at 512x512 in float16 as a Colab reader runs them, and writes the peak GPU memory
# (and wall time) of each to benchmarks/results-notebooks-gpu.md (benchmarks/notebook_memory.py).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    echo "no .venv yet: running 'make setup' (installs torch ${TORCH_SPEC:-from the Makefile} and sdexplain)"
    make setup
fi
PY=.venv/bin/python

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: PyTorch sees no CUDA GPU here ($("$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'))." >&2
    echo "Run this on a CUDA machine with a CUDA build of torch; on a CPU use: $PY benchmarks/run_all.py" >&2
    exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

if [ "${1:-}" = "--notebooks" ]; then
    shift
    if [ "$#" -gt 0 ]; then
        exec "$PY" benchmarks/notebook_memory.py --model sd15 --device cuda --notebooks "$@"
    fi
    exec "$PY" benchmarks/notebook_memory.py --model sd15 --device cuda
fi

if [ "${1:-}" = "--sdxl" ]; then
    shift
    exec "$PY" benchmarks/sdxl_memory.py --model sdxl --device cuda --dtype float16 --size 1024 --steps 25 --out benchmarks/results-sdxl-gpu.md "$@"
fi

"$PY" benchmarks/run_all.py \
    --model sd15 --device cuda --dtype float16 --size 512 --steps 25 \
    --only trace,cfg,scaling \
    --out benchmarks/results-gpu.md \
    "$@"
exec "$PY" benchmarks/sdxl_memory.py --model sdxl --device cuda --dtype float16 --size 1024 --steps 25 --out benchmarks/results-sdxl-gpu.md
