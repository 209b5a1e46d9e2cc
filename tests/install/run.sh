#!/usr/bin/env bash
# Installs normkit from the build tree $1 into a temporary prefix, then builds examples/hello.c
# against it four ways — pkg-config shared and static, CMake find_package shared and static —
# and runs each program.
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
echo "install test: 4 passed, 0 failed"
