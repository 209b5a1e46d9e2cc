#!/usr/bin/env bash
# cuda_device_check.sh — everything the CUDA backend needs a GPU for, in one run (the GPU
# machine is lent for minutes: see docs/cuda.md "Working on the GPU machine").
#   1. the GPU as found (name, clocks, driver);
#   2. the CUDA tests (tests/cuda/: float64 references, edge cases, poisoned outputs, bitwise
#      reruns), then compute-sanitizer memcheck and racecheck on their quick mode;
#   3. `normkit bench --cuda --json` (device copy bandwidth measured in the same run);
#   4. scripts/cuda_torch_compare.py (PyTorch eager and torch.compile on the same shapes).
# Binaries: from $NK_BIN (built on the CPU machine: scripts/cuda_stage_bins.sh) when they run
# there, else built here. Logs and JSON go to $OUT (the device tool brings them back).
# At most 8 files come back from $OUT: summary.txt, the two test logs, sanitizer.log,
# bench.jsonl, bench.err, torch.log, torch.jsonl.
# Steps: NK_STEPS="gpu tests sanitize bench torch" (default all). Each step has a time limit.
set -u
OUT=${OUT:-/tmp/nk-cuda-out}
mkdir -p "$OUT"
BIN=${NK_BIN:-.devbin}
STEPS=${NK_STEPS:-"gpu tests sanitize bench torch"}
summary="$OUT/summary.txt"
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }
has() { case " $STEPS " in *" $1 "*) return 0 ;; esac; return 1; }

if ! "$BIN/normkit" info >/dev/null 2>&1 || ! [ -x "$BIN/test_cuda_rownorm" ]; then
  note "binaries from $BIN do not run here: building (Release, NK_CUDA=ON)"
  cmake -S . -B build-dev -G Ninja -DCMAKE_BUILD_TYPE=Release -DNK_CUDA=ON -DNK_MPI=OFF >/tmp/nk-build.log 2>&1 &&
    cmake --build build-dev -j 16 --target normkit nk_cuda_tests >>/tmp/nk-build.log 2>&1 ||
    { note "BUILD FAILED"; tail -30 /tmp/nk-build.log | tee -a "$summary"; exit 1; }
  BIN=build-dev
  cp build-dev/normkit build-dev/tests/test_cuda_* "$BIN" 2>/dev/null
  [ -x "$BIN/test_cuda_rownorm" ] || BIN=build-dev/tests
  [ -x build-dev/normkit ] && NORMKIT=build-dev/normkit
fi
NORMKIT=${NORMKIT:-$BIN/normkit}

if has gpu; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw \
    --format=csv 2>&1 | tee -a "$summary"
fi

if has tests; then
  for t in "$BIN"/test_cuda_*; do
    n=$(basename "$t")
    timeout 120 "$t" >"$OUT/$n.log" 2>&1
    rc=$?
    note "$n: rc=$rc ($(grep -c FAIL "$OUT/$n.log") FAIL lines) $(tail -1 "$OUT/$n.log")"
  done
fi

if has bench; then
  timeout 150 "$NORMKIT" bench --cuda --json ${NK_BENCH_ARGS:-} >"$OUT/bench.jsonl" 2>"$OUT/bench.err"
  note "bench: rc=$? $(wc -l <"$OUT/bench.jsonl") cases"
  python3 - "$OUT/bench.jsonl" <<'EOF' | tee -a "$summary"
import json, sys
for line in open(sys.argv[1]):
    try: r = json.loads(line)
    except Exception: continue
    print(f"{r['op']:14s} {r['direction']:6s} {r['dtype']:5s} {r['rows']:>7}x{r['cols']:<7} "
          f"{r['gbps']/1000:6.2f} TB/s  {r['fraction']:.2f} of copy")
EOF
fi

if has sanitize; then
  for tool in memcheck racecheck; do
    for t in "$BIN"/test_cuda_*; do
      n=$(basename "$t")
      NK_CUDA_TEST_QUICK=1 timeout 45 compute-sanitizer --tool "$tool" --error-exitcode 9 "$t" \
        >"$OUT/san-$tool-$n.log" 2>&1
      rc=$?
      note "compute-sanitizer $tool $n: rc=$rc $(grep -m1 'ERROR SUMMARY' "$OUT/san-$tool-$n.log")"
    done
  done
  cat "$OUT"/san-*.log >"$OUT/sanitizer.log" 2>/dev/null
  rm -f "$OUT"/san-*.log
fi

if has torch; then
  PYTHONUNBUFFERED=1 timeout 200 python3 scripts/cuda_torch_compare.py --budget ${NK_TORCH_BUDGET:-150} --out "$OUT/torch.jsonl" \
    >"$OUT/torch.log" 2>&1
  note "torch compare: rc=$?"
  tail -40 "$OUT/torch.log" | tee -a "$summary" >/dev/null
fi
cat "$summary"
