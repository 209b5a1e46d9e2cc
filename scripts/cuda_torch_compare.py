#!/usr/bin/env python3
"""cuda_torch_compare.py - PyTorch anchors for `normkit bench --cuda` (tools/bench_cuda.c).

Times PyTorch eager and torch.compile (mode default, dynamic=False) on the GPU for the ops that
normkit's CUDA backend implements, and reports them as `normkit bench --cuda` does: minimal bytes
(the C bench's formulas: each input read once, each output written once, parameters and
statistics counted as f32), GB/s (TB/s in the table), and the fraction of a device-to-device
copy measured in the same run (dst.copy_(src) of 2 GiB, bytes = read + write).

Cases (bf16): LayerNorm fwd and bwd, RMSNorm fwd and bwd (torch.nn.functional.rms_norm),
softmax fwd and bwd, log_softmax fwd at 32768x4096, 8192x16384, 4096x65536, 1024x262144;
cross_entropy (reduction mean) fwd and fused fwd+bwd at 8192x128256.
  fwd      one call of the op (inputs do not require grad).
  bwd      the backward alone: the forward is run once with inputs that require grad, and each
           timed call is torch.autograd.grad(y, inputs, dy, retain_graph=True) (dx, and dgamma /
           dbeta for the norms). Should that fail (e.g. a compiled backward that refuses a
           retained graph), the case is timed as fwdbwd instead (a fresh forward + grad per
           call; bytes = fwd + bwd bytes) and says so (method "fwd+grad").
  fwdbwd   cross-entropy: loss = F.cross_entropy(x, t); torch.autograd.grad(loss, x).
Parameters (gamma, beta) have the activations' dtype, as in PyTorch models; the bytes still
count them as f32 like the C bench (a difference of cols * 2 bytes, negligible here).

Timing (own CUDA-event timing, not triton.testing.do_bench): one untimed call (it includes the
compilation for torch.compile; reported as first_call_s), 3 warm-up calls, then --reps (30)
reps, all enqueued before one synchronisation. Before each rep, outside the events: a short
torch.cuda._sleep (so the host can enqueue the rep's launches before the GPU reaches them) and
a 256 MiB tensor zeroed (flushes the 50 MB L2). Median and minimum of the reps.

Robust: a failing case prints its error and the run goes on; compile cases are skipped once
--budget seconds have passed (the whole run is meant to take under about 4 minutes; the
cross-entropy shape runs first, then the row shapes from the narrowest). torch.compile wraps the
same module-level function for every shape, so Dynamo's recompile limits are raised, and
torch._functorch.config.donated_buffer is turned off (a compiled backward with donated buffers
refuses retain_graph=True). Exit status 1 if a case failed, else 0.

Usage (on the GPU machine; needs only torch):
  python3 scripts/cuda_torch_compare.py --out torch_cuda.jsonl [--reps 30] [--no-compile]
      [--quick] [--budget 200]
"""
import argparse
import importlib
import json
import statistics
import sys
import time
import traceback

import torch
import torch.nn.functional as F

GIB = 1 << 30
COPY_BYTES = 2 * GIB
FLUSH_BYTES = 256 << 20
WARMUP = 3
SLEEP_CYCLES = 200_000  # ~0.1 ms at H100 clocks: the host's head start for each rep
LN_EPS = 1e-5
RMS_EPS = 1e-6

ROW_SHAPES = [(32768, 4096), (8192, 16384), (4096, 65536), (1024, 262144)]
CE_SHAPES = [(8192, 128256)]
ROW_CASES = [("layernorm", "fwd"), ("layernorm", "bwd"), ("rmsnorm", "fwd"), ("rmsnorm", "bwd"),
             ("softmax", "fwd"), ("softmax", "bwd"), ("log_softmax", "fwd")]
CE_CASES = [("cross_entropy", "fwd"), ("cross_entropy", "fwdbwd")]

DTYPE_NAMES = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}


# ---- the ops (module-level functions: torch.compile wraps each once per case) -----------------

def op_layernorm(x, w, b):
    return F.layer_norm(x, (x.shape[-1],), w, b, LN_EPS)


def op_rmsnorm(x, w):
    return F.rms_norm(x, (x.shape[-1],), w, RMS_EPS)


def op_softmax(x):
    return torch.softmax(x, dim=-1)


def op_log_softmax(x):
    return torch.log_softmax(x, dim=-1)


def op_cross_entropy(x, t):
    return F.cross_entropy(x, t, reduction="mean")


OPS = {"layernorm": op_layernorm, "rmsnorm": op_rmsnorm, "softmax": op_softmax,
       "log_softmax": op_log_softmax, "cross_entropy": op_cross_entropy}
KERNEL_NAMES = {"layernorm": "torch.nn.functional.layer_norm",
                "rmsnorm": "torch.nn.functional.rms_norm", "softmax": "torch.softmax",
                "log_softmax": "torch.log_softmax",
                "cross_entropy": "torch.nn.functional.cross_entropy"}


# ---- bytes: exactly tools/bench_cuda.c's case_bytes --------------------------------------------

def case_bytes(op, direction, rows, cols, esz):
    mat = float(rows) * float(cols) * esz
    per_col, per_row = 4.0 * cols, 4.0 * rows
    if op == "cross_entropy":
        return mat * (1 + (direction == "fwdbwd")) + 2 * per_row + 4
    if op in ("softmax", "log_softmax"):
        if direction == "fwdbwd":
            return 2 * mat + 3 * mat
        return 2 * mat if direction == "fwd" else 3 * mat
    ln = 1.0 if op == "layernorm" else 0.0
    fwd = 2 * mat + per_col * (1 + ln) + per_row * (1 + ln)
    bwd = 3 * mat + per_col + per_row * (1 + ln) + per_col * (1 + ln)
    return {"fwd": fwd, "bwd": bwd, "fwdbwd": fwd + bwd}[direction]


# ---- timing ------------------------------------------------------------------------------------

class Timer:
    def __init__(self, reps):
        self.reps = reps
        self.start = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        self.stop = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        self.flush = torch.empty(FLUSH_BYTES // 4, dtype=torch.float32, device="cuda")
        self.sleep = getattr(torch.cuda, "_sleep", None)

    def run(self, fn, flush=True, warmup=WARMUP):
        """Median and minimum seconds of self.reps calls of fn, each between two events."""
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        for i in range(self.reps):
            if self.sleep is not None:
                self.sleep(SLEEP_CYCLES)
            if flush:
                self.flush.zero_()
            self.start[i].record()
            fn()
            self.stop[i].record()
        torch.cuda.synchronize()
        times = [s.elapsed_time(e) * 1e-3 for s, e in zip(self.start, self.stop)]
        return statistics.median(times), min(times)


def measure_copy(timer):
    src = torch.empty(COPY_BYTES, dtype=torch.uint8, device="cuda").fill_(0x3C)
    dst = torch.empty_like(src)
    median, _ = timer.run(lambda: dst.copy_(src), flush=False)
    del src, dst
    torch.cuda.empty_cache()
    return 2.0 * COPY_BYTES / median / 1e9


# ---- cases -------------------------------------------------------------------------------------

class ShapeData:
    """The tensors of one shape, shared by its cases."""

    def __init__(self, rows, cols, dtype, ce):
        dev = "cuda"
        self.rows, self.cols, self.dtype = rows, cols, dtype
        self.x = torch.randn(rows, cols, device=dev, dtype=dtype)
        self.dy = None if ce else torch.randn(rows, cols, device=dev, dtype=dtype)
        self.w = None if ce else torch.randn(cols, device=dev, dtype=dtype)
        self.b = None if ce else torch.randn(cols, device=dev, dtype=dtype)
        self.t = torch.randint(0, cols, (rows,), device=dev) if ce else None

    def args(self, op, grad):
        """The op's arguments, and the leaves whose gradients the backward computes."""
        def g(t):
            return t.detach().requires_grad_(True) if grad else t
        x = g(self.x)
        if op == "layernorm":
            w, b = g(self.w), g(self.b)
            return (x, w, b), (x, w, b)
        if op == "rmsnorm":
            w = g(self.w)
            return (x, w), (x, w)
        if op == "cross_entropy":
            return (x, self.t), (x,)
        return (x,), (x,)


def make_call(data, op, direction, impl):
    """Returns (call, method): call() runs one timed unit of the case."""
    fn = OPS[op]
    if impl == "compile":
        fn = torch.compile(fn, dynamic=False)
    if direction == "fwd":
        args, _ = data.args(op, grad=False)
        return (lambda: fn(*args)), "call"
    args, leaves = data.args(op, grad=True)
    if direction == "fwdbwd":  # cross-entropy: loss and dlogits, a fresh graph each call
        return (lambda: torch.autograd.grad(fn(*args), leaves)), "fwd+grad"
    y = fn(*args)  # bwd: the backward alone, on a retained graph
    dy = data.dy

    def bwd():
        return torch.autograd.grad(y, leaves, dy, retain_graph=True)

    def fwdbwd():
        return torch.autograd.grad(fn(*args), leaves, dy)

    try:
        bwd()
        torch.cuda.synchronize()
        return bwd, "retained_graph"
    except Exception as e:  # noqa: BLE001 - report and fall back
        print(f"  note: {op} bwd {impl}: the retained-graph backward failed "
              f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}); "
              "timing fwd+bwd instead", file=sys.stderr)
        return fwdbwd, "fwd+grad"


def set_dynamo_limits():
    try:  # (a plain `import torch._dynamo` here would make `torch` a local name)
        importlib.import_module("torch._dynamo")
    except ImportError:
        pass
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, 256)
    for name in ("accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, 4096)
    try:  # a compiled backward with donated buffers refuses retain_graph=True
        import torch._functorch.config as fcfg
        if hasattr(fcfg, "donated_buffer"):
            fcfg.donated_buffer = False
    except Exception:  # noqa: BLE001
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="JSON lines file (one line per case)")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--no-compile", action="store_true", help="eager only")
    ap.add_argument("--quick", action="store_true", help="32768x4096 and cross-entropy only")
    ap.add_argument("--budget", type=float, default=200.0,
                    help="seconds after which compile cases are skipped (default 200)")
    opts = ap.parse_args()
    t0 = time.time()

    if not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 1
    torch.manual_seed(0)
    set_dynamo_limits()
    props = torch.cuda.get_device_properties(0)
    try:
        import triton
        triton_version = triton.__version__
    except Exception:  # noqa: BLE001
        triton_version = "-"
    l2 = getattr(props, "L2_cache_size", 0)
    print(f"torch {torch.__version__}, triton {triton_version}, CUDA {torch.version.cuda}; "
          f"{props.name}, {props.multi_processor_count} SMs, L2 {l2 / 2**20:.1f} MiB, "
          f"{props.total_memory / GIB:.1f} GiB")

    timer = Timer(max(1, opts.reps))
    copy_gbps = measure_copy(timer)
    print(f"copy (dst.copy_(src), 2 x 2 GiB, median of {opts.reps}): {copy_gbps / 1000:.3f} TB/s")
    out = open(opts.out, "w") if opts.out else None
    impls = ["eager"] + ([] if opts.no_compile else ["compile"])
    row_shapes = ROW_SHAPES[:1] if opts.quick else ROW_SHAPES
    # cross-entropy first: should the compile budget run out, the row shapes' last cases go
    plan = [(s, CE_CASES, True) for s in CE_SHAPES] + [(s, ROW_CASES, False) for s in row_shapes]
    dtype = torch.bfloat16
    esz = torch.finfo(dtype).bits // 8
    errors, skipped = [], 0

    hdr = (f"{'impl':<8} {'op':<13} {'dir':<6} {'dtype':<5} {'shape':<12} {'median_us':>10} "
           f"{'min_us':>10} {'TB/s':>7} {'frac':>6} {'first_s':>8}  method")
    print(hdr)
    for (rows, cols), cases, ce in plan:
        try:
            data = ShapeData(rows, cols, dtype, ce)
        except Exception as e:  # noqa: BLE001
            errors.append(f"{rows}x{cols}: {type(e).__name__}: {e}")
            print(f"ERROR allocating {rows}x{cols}: {type(e).__name__}: {e}", file=sys.stderr)
            torch.cuda.empty_cache()
            continue
        for op, direction in cases:
            for impl in impls:
                label = f"{impl} {op} {direction} {DTYPE_NAMES[dtype]} {rows}x{cols}"
                if impl == "compile" and time.time() - t0 > opts.budget:
                    skipped += 1
                    print(f"  skipped (time budget): {label}", file=sys.stderr)
                    continue
                try:
                    t1 = time.time()
                    call, method = make_call(data, op, direction, impl)
                    call()  # first call: compiles (torch.compile) and allocates
                    torch.cuda.synchronize()
                    first_s = time.time() - t1
                    median, mn = timer.run(call)
                except Exception as e:  # noqa: BLE001 - one failing case must not stop the run
                    msg = f"{type(e).__name__}: {str(e).strip()[:400]}"
                    errors.append(f"{label}: {msg}")
                    print(f"ERROR {label}: {msg}", file=sys.stderr)
                    traceback.print_exc(limit=3, file=sys.stderr)
                    try:
                        torch.cuda.synchronize()
                    except Exception:  # noqa: BLE001
                        pass
                    torch.cuda.empty_cache()
                    continue
                dir_out = "fwdbwd" if method == "fwd+grad" else direction
                nbytes = case_bytes(op, dir_out, rows, cols, esz)
                gbps = nbytes / median / 1e9
                frac = gbps / copy_gbps
                print(f"{impl:<8} {op:<13} {dir_out:<6} {DTYPE_NAMES[dtype]:<5} "
                      f"{f'{rows}x{cols}':<12} {median * 1e6:>10.2f} {mn * 1e6:>10.2f} "
                      f"{gbps / 1000:>7.3f} {frac:>6.3f} {first_s:>8.2f}  {method}", flush=True)
                if out:
                    rec = {"op": op, "direction": dir_out, "dtype": DTYPE_NAMES[dtype],
                           "param_dtype": DTYPE_NAMES[dtype], "layout": "rows", "rows": rows,
                           "cols": cols, "elements": rows * cols, "threads": 0, "isa": "cuda",
                           "impl": "torch_" + impl,
                           "kernel": KERNEL_NAMES[op] + (" (torch.compile)" if impl == "compile"
                                                         else ""),
                           "method": method, "median_s": median, "min_s": mn,
                           "reps": opts.reps, "bytes": nbytes, "gbps": gbps,
                           "copy_gbps": copy_gbps, "copy_nt_gbps": copy_gbps, "fraction": frac,
                           "first_call_s": first_s, "device": props.name,
                           "torch": torch.__version__, "triton": triton_version}
                    out.write(json.dumps(rec) + "\n")
                    out.flush()
        del data
        torch.cuda.empty_cache()

    if out:
        out.close()
    print(f"\n{len(errors)} error(s), {skipped} compile case(s) skipped by the budget, "
          f"total {time.time() - t0:.1f} s")
    for e in errors:
        print(f"  {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
