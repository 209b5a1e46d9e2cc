#!/usr/bin/env bash
# cuda_device_check.sh — everything the CUDA backend needs a GPU for, in one run (the GPU
# machine is lent for minutes: see docs/cuda.md "Working on the GPU machine").
#   gpu        the GPU as found (name, clocks, driver)
#   tests      the CUDA tests (tests/cuda/: float64 references, edge cases, poisoned outputs,
#              bitwise reruns)
#   bench      normkit bench --cuda --json (device copy bandwidth measured in the same run)
#   memcheck   compute-sanitizer memcheck on the tests' quick mode (NK_CUDA_TEST_QUICK=1)
#   racecheck  compute-sanitizer racecheck on the same (racecheck-softmax, racecheck-rownorm:
#              one program only)
#   torch      scripts/cuda_torch_compare.py (PyTorch eager and torch.compile, same shapes)
#   ref        quick tests and bench of a second set of binaries in $NK_BIN_REF (the previous
#              version, for a comparison in the same session) into ref.log
# Steps run in the order of NK_STEPS (default "gpu tests bench memcheck racecheck torch").
# Binaries: from $NK_BIN (scripts/cuda_stage_bins.sh builds them on the CPU machine) when they
# run there, else built here. Everything goes to $OUT; at most 8 files come back from it:
# summary.txt, the two test logs, sanitizer.log, bench.jsonl, torch.jsonl, ref.log.
set -u
OUT=${OUT:-/tmp/nk-cuda-out}
mkdir -p "$OUT"
BIN=${NK_BIN:-.devbin}
STEPS=${NK_STEPS:-"gpu tests bench memcheck racecheck torch"}
summary="$OUT/summary.txt"
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }

if ! "$BIN/normkit" info >/dev/null 2>&1 || ! [ -x "$BIN/test_cuda_rownorm" ]; then
  note "binaries from $BIN do not run here: building (Release, NK_CUDA=ON)"
  cmake -S . -B build-dev -G Ninja -DCMAKE_BUILD_TYPE=Release -DNK_CUDA=ON -DNK_MPI=OFF >/tmp/nk-build.log 2>&1 &&
    cmake --build build-dev -j 16 --target normkit nk_cuda_tests >>/tmp/nk-build.log 2>&1 ||
    { note "BUILD FAILED"; tail -30 /tmp/nk-build.log | tee -a "$summary"; exit 1; }
  mkdir -p build-dev/bin && cp build-dev/normkit build-dev/tests/test_cuda_* build-dev/bin/
  BIN=build-dev/bin
fi

sanitize() { # tool, program names...
  local tool=$1 t n rc
  shift
  for n in "$@"; do
    t="$BIN/$n"
    NK_CUDA_TEST_QUICK=1 timeout "${NK_SAN_TIMEOUT:-60}" compute-sanitizer --tool "$tool" \
      --error-exitcode 9 "$t" >>"$OUT/sanitizer.log" 2>&1
    rc=$?
    note "compute-sanitizer $tool $n: rc=$rc $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer.log" | tail -1)"
  done
}

bench_table() {
  python3 - "$1" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    try: r = json.loads(line)
    except Exception: continue
    print(f"{r['op']:14s} {r['direction']:6s} {r['dtype']:5s} {r['rows']:>7}x{r['cols']:<7} "
          f"{r['gbps']/1000:6.2f} TB/s  {r['fraction']:.2f} of copy")
EOF
}

for step in $STEPS; do
  case $step in
    gpu)
      nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw \
        --format=csv 2>&1 | tee -a "$summary" ;;
    tests)
      for t in "$BIN"/test_cuda_*; do
        n=$(basename "$t")
        timeout 120 "$t" >"$OUT/$n.log" 2>&1
        note "$n: rc=$? ($(grep -c FAIL "$OUT/$n.log") FAIL lines) $(tail -1 "$OUT/$n.log")"
      done ;;
    bench)
      timeout 150 "$BIN/normkit" bench --cuda --json ${NK_BENCH_ARGS:-} >"$OUT/bench.jsonl" 2>/tmp/nk-bench.err
      note "bench: rc=$? $(wc -l <"$OUT/bench.jsonl") cases"
      { echo "--- bench stderr"; cat /tmp/nk-bench.err; } >>"$summary"
      bench_table "$OUT/bench.jsonl" | tee -a "$summary" ;;
    memcheck) sanitize memcheck test_cuda_rownorm test_cuda_softmax ;;
    racecheck) sanitize racecheck test_cuda_softmax test_cuda_rownorm ;;
    racecheck-softmax) sanitize racecheck test_cuda_softmax ;;
    racecheck-rownorm) sanitize racecheck test_cuda_rownorm ;;
    torch)
      PYTHONUNBUFFERED=1 timeout 200 python3 scripts/cuda_torch_compare.py \
        --budget "${NK_TORCH_BUDGET:-150}" --out "$OUT/torch.jsonl" >/tmp/nk-torch.log 2>&1
      note "torch compare: rc=$?"
      { echo "--- torch"; cat /tmp/nk-torch.log; } >>"$summary" ;;
    ref)
      R=${NK_BIN_REF:-.devbin/ref}
      for n in test_cuda_rownorm test_cuda_softmax; do
        NK_CUDA_TEST_QUICK=1 timeout 60 "$R/$n" >>"$OUT/ref.log" 2>&1
        note "ref $n (quick): rc=$? $(tail -1 "$OUT/ref.log")"
      done
      timeout 150 "$R/normkit" bench --cuda --json ${NK_BENCH_ARGS:-} >/tmp/nk-ref.jsonl 2>>"$OUT/ref.log"
      note "ref bench: rc=$?"
      cat /tmp/nk-ref.jsonl >>"$OUT/ref.log"
      bench_table /tmp/nk-ref.jsonl >>"$OUT/ref.log" ;;
    *) note "unknown step $step" ;;
  esac
done
echo "=== summary"
grep -v "^---" "$summary" | grep -E "rc=|FAIL|SUMMARY|of copy" | head -100
