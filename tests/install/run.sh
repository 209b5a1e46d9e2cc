#!/usr/bin/env bash
# Installs normkit from the build tree $1 into a temporary prefix, then builds examples/hello.c
# against it four ways — pkg-config shared and static, CMake find_package shared and static —
# and runs each program; with normkit_mpi installed, also examples/hello_mpi.c (static and
# shared) on 2 ranks.
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
libdir=$(ls -d "$tmp"/prefix/lib*/pkgconfig | head -n1 | xargs dirname)
export PKG_CONFIG_PATH="$libdir/pkgconfig"

cc -std=c11 "$src/examples/hello.c" $(pkg-config --cflags --libs normkit) -lm -o "$tmp/hello_pc_shared"
LD_LIBRARY_PATH="$libdir" "$tmp/hello_pc_shared"
# (ldd's output is captured first: with pipefail, `ldd | grep -q` fails when grep exits early)
deps=$(ldd "$tmp/hello_pc_shared")
case "$deps" in *libnormkit.so*) ;; *) echo "not linked to the shared library"; exit 1 ;; esac

cc -std=c11 "$src/examples/hello.c" $(pkg-config --cflags normkit) "$libdir/libnormkit.a" \
   $(pkg-config --libs-only-other --static normkit) -lpthread -lm -o "$tmp/hello_pc_static"
"$tmp/hello_pc_static"
deps=$(ldd "$tmp/hello_pc_static")
case "$deps" in *libnormkit.so*) echo "static build uses the .so"; exit 1 ;; esac

cmake -S "$src/examples" -B "$tmp/ex" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/ex" >/dev/null
"$tmp/ex/hello_static"
LD_LIBRARY_PATH="$libdir" "$tmp/ex/hello_shared"
passed=4
# normkit_mpi, when this build has it: the CMake package must provide it and it must run.
if [ -f "$tmp/prefix/include/normkit_mpi.h" ]; then
  mpi="mpiexec -n 2"
  case "$(mpiexec --version 2>&1)" in
    *"Open MPI"*|*OpenRTE*) mpi="mpiexec --allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none -n 2" ;;
  esac
  [ -x "$tmp/ex/hello_mpi_static" ] || { echo "normkit_mpi is installed but find_package did not provide it"; exit 1; }
  $mpi "$tmp/ex/hello_mpi_static"
  LD_LIBRARY_PATH="$libdir" $mpi "$tmp/ex/hello_mpi_shared"
  passed=6
fi
echo "install test: $passed passed, 0 failed"
