#!/usr/bin/env bash
# Installs what `make test` needs (Debian packages), idempotently; fails if something is missing
# afterwards. Runs `apt-get update` once, only when a package has to be installed.
set -euo pipefail
pkgs="cmake make gcc clang pkg-config python3 libc6-dev"
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
for c in cmake make gcc clang pkg-config python3; do
  command -v "$c" >/dev/null || { echo "deps: $c is missing and could not be installed" >&2; exit 1; }
done
# The sanitizer runtimes of gcc (ASan, UBSan) must link.
printf 'int main(void){return 0;}\n' | gcc -x c -fsanitize=address,undefined -o /tmp/nk-san-probe - \
  || { echo "deps: gcc cannot link -fsanitize=address,undefined" >&2; exit 1; }
rm -f /tmp/nk-san-probe
echo "deps: ok"
