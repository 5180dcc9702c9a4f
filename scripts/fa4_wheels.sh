#!/usr/bin/env bash
# Download flash-attn 4 (the CuTe-DSL kernels, PyPI `flash-attn-4`) and the wheels it needs that the
# GPU image lacks, for an offline machine: CPython 3.12, x86-64 Linux, CUDA 13.
#
#   scripts/fa4_wheels.sh DEST          # writes DEST/1/ and DEST/2/, each under 64 MiB
#
# On a machine with internet `pip install 'scail[fa4]'` is all it takes. The wheels come to ~98 MiB,
# 92 of them one file (nvidia-cutlass-dsl-libs-cu13: the MLIR compiler the DSL JIT-compiles with), so
# for transfers capped at 64 MiB that file is split in two; on the target, restore and install with
#   cat DEST/*/cutlass-cu13.part-* > DEST/2/$(cat DEST/2/cutlass-cu13.name) && pip install --no-index --no-deps DEST/2/*.whl
# Versions are pinned to what was tested.
set -euo pipefail
dest=${1:?usage: scripts/fa4_wheels.sh DEST}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
  platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  -d "$tmp" flash-attn-4==4.0.0b36 nvidia-cutlass-dsl==4.8.1 nvidia-cutlass-dsl-libs-base==4.8.1 \
  nvidia-cutlass-dsl-libs-core==4.8.1 nvidia-cutlass-dsl-libs-cu13==4.8.1 apache-tvm-ffi==0.1.15.post2 \
  torch-c-dlpack-ext==0.1.5 quack-kernels==0.6.5
mkdir -p "$dest/1" "$dest/2"
big=$(ls "$tmp"/nvidia_cutlass_dsl_libs_cu13-*.whl)
basename "$big" > "$dest/2/cutlass-cu13.name"
split -b 60M -d "$big" "$tmp/cutlass-cu13.part-"
mv "$tmp/cutlass-cu13.part-00" "$dest/1/"
mv "$tmp"/cutlass-cu13.part-0[1-9] "$dest/2/"
rm "$big"
mv "$tmp"/*.whl "$dest/2/"
du -sh "$dest/1" "$dest/2"
