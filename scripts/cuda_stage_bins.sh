#!/usr/bin/env bash
# cuda_stage_bins.sh — builds the CUDA backend here (no GPU needed) and copies the executables
# that scripts/cuda_device_check.sh runs into .devbin/ (git-ignored through .git/info/exclude),
# so the GPU machine's minutes go to running, not compiling. Pass .devbin as the device call's
# `carry`.
set -euo pipefail
cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release -DNK_CUDA=ON -DNK_MPI=OFF >/dev/null
cmake --build build-cuda -j "${JOBS:-2}" --target normkit nk_cuda_tests
grep -qx '/.devbin/' .git/info/exclude 2>/dev/null || echo '/.devbin/' >>.git/info/exclude
rm -rf .devbin && mkdir -p .devbin
cp build-cuda/normkit build-cuda/tests/test_cuda_* .devbin/
du -sh .devbin
