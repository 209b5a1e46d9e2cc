#!/usr/bin/env bash
# Installs what `make test` needs (Debian packages), idempotently; fails if something is missing
# afterwards. Runs `apt-get update` once, only when a package has to be installed.
set -euo pipefail
# libopenmpi-dev, openmpi-bin: normkit_mpi and its tests (mpicc's headers/libraries, mpirun).
# libclang-rt-14-dev: libFuzzer and clang's sanitizer runtimes (ASan, UBSan, TSan, libFuzzer).
# valgrind: make test-valgrind (memcheck of the C tests; not part of make test).
# liblapacke-dev: normkit_lapack (the Conda SVD basis refresh) and its tests.
pkgs="cmake make gcc clang pkg-config python3 libc6-dev libopenmpi-dev openmpi-bin libclang-rt-14-dev valgrind liblapacke-dev"
missing=""
for p in $pkgs; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "deps: installing$missing"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q $missing
fi
for c in cmake make gcc clang pkg-config python3 mpicc mpirun valgrind; do
  command -v "$c" >/dev/null || { echo "deps: $c is missing and could not be installed" >&2; exit 1; }
done
# The sanitizer runtimes of gcc (ASan, UBSan) must link.
printf 'int main(void){return 0;}\n' | gcc -x c -fsanitize=address,undefined -o /tmp/nk-san-probe - \
  || { echo "deps: gcc cannot link -fsanitize=address,undefined" >&2; exit 1; }
rm -f /tmp/nk-san-probe
# clang must link a libFuzzer harness with ASan+UBSan (make test-fuzz).
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n){(void)d;(void)n;return 0;}\n' \
  | clang -x c -fsanitize=fuzzer,address,undefined -o /tmp/nk-fuzz-probe - \
  || { echo "deps: clang cannot link -fsanitize=fuzzer,address,undefined" >&2; exit 1; }
rm -f /tmp/nk-fuzz-probe
# clang must link ThreadSanitizer (make test-tsan).
printf 'int main(void){return 0;}\n' | clang -x c -fsanitize=thread -o /tmp/nk-tsan-probe - \
  || { echo "deps: clang cannot link -fsanitize=thread" >&2; exit 1; }
rm -f /tmp/nk-tsan-probe
# MPI's C headers and library must link (normkit_mpi; the tests configure with NK_MPI=ON).
printf '#include <mpi.h>\nint main(int c, char **v){MPI_Init(&c,&v);MPI_Finalize();return 0;}\n' \
  | mpicc -x c -o /tmp/nk-mpi-probe - \
  || { echo "deps: mpicc cannot build an MPI program" >&2; exit 1; }
rm -f /tmp/nk-mpi-probe
# LAPACKE must link (normkit_lapack; the tests configure with NK_LAPACK=ON).
printf '#include <lapacke.h>\nint main(void){float a=1,s,u,v;return (int)LAPACKE_sgesdd(LAPACK_COL_MAJOR,%sS%s,1,1,&a,1,&s,&u,1,&v,1);}\n' "'" "'" \
  | gcc -x c -o /tmp/nk-lapack-probe - -llapacke -llapack \
  || { echo "deps: LAPACKE (liblapacke-dev) cannot be linked" >&2; exit 1; }
/tmp/nk-lapack-probe || { echo "deps: LAPACKE's sgesdd failed on a 1 x 1 matrix" >&2; exit 1; }
rm -f /tmp/nk-lapack-probe
# The CUDA toolkit's compiler (the CUDA backend must build here even without a GPU: make
# test-cuda). It is not a Debian package here: /usr/local/cuda from NVIDIA's installer.
nvcc_bin="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"
[ -x "$nvcc_bin" ] || { echo "deps: nvcc (CUDA toolkit) is missing" >&2; exit 1; }
echo "deps: ok"
