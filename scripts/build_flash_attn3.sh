#!/usr/bin/env bash
# Build and install flash-attn 3 (Hopper: H100 / H200) with only the kernels scail uses.
#
#   scripts/build_flash_attn3.sh [FLASH_ATTENTION_CHECKOUT]
#
# scail's attention `auto` takes flash-attn 3 when it imports (scail doctor says which kernel runs).
# It makes the exact bf16 step faster than cuDNN SDPA (benchmarks/README.md), and fast mode's FP8
# self-attention needs it. flash-attn 3 has no wheels on PyPI and a
# full build compiles hundreds of kernels; scail needs two forward kernels (head dim 128, bf16 and
# FP8 e4m3), which build in about 1.5 minutes on 16 cores.
#
# Needs: the CUDA toolkit (nvcc >= 12.3) matching your torch's CUDA major version, a C++17 compiler,
# ninja, and the Python environment scail runs in (activate it first). Without an argument the
# flash-attention repository is cloned (with its cutlass submodule) into ./flash-attention.
set -euo pipefail

src=${1:-flash-attention}
if [[ ! -d "$src/hopper" ]]; then
  if [[ $# -ge 1 ]]; then
    echo "error: $src has no hopper/ folder; pass a checkout of github.com/Dao-AILab/flash-attention" >&2
    exit 1
  fi
  git clone --depth 1 https://github.com/Dao-AILab/flash-attention "$src"
fi
if [[ ! -f "$src/csrc/cutlass/include/cutlass/cutlass.h" ]]; then
  git -C "$src" submodule update --init --depth 1 csrc/cutlass
fi
command -v nvcc >/dev/null || { echo "error: nvcc not found; install the CUDA toolkit or set CUDA_HOME and PATH" >&2; exit 1; }
python -c "import torch" 2>/dev/null || { echo "error: torch is not importable from $(command -v python); activate scail's environment" >&2; exit 1; }

# everything scail does not call is left out: backward, split/paged/append KV, local and causal
# variants, softcap, GQA packing, fp16, varlen, clusters, other head dims, Ampere
for feature in BACKWARD SPLIT PAGEDKV APPENDKV LOCAL SOFTCAP PACKGQA FP16 VARLEN CLUSTER \
               HDIM64 HDIM96 HDIM192 HDIM256 SM80 HDIMDIFF64 HDIMDIFF192; do
  export "FLASH_ATTENTION_DISABLE_${feature}=TRUE"
done
export FLASH_ATTENTION_FORCE_BUILD=TRUE
export MAX_JOBS=${MAX_JOBS:-4} NVCC_THREADS=${NVCC_THREADS:-4}

cd "$src/hopper"
python -m pip install --no-build-isolation --no-deps -v .
python -c "import flash_attn_interface; print('flash-attn 3 installed:', flash_attn_interface.__file__)"
