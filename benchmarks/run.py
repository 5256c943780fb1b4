"""Run nnframe's benchmark suite: every case in its own process, side by side with references.

    python -m benchmarks                     # all cases, threads pinned to 1 and default
    python -m benchmarks --quick             # fewer repeats, shorter timings
    python -m benchmarks --filter mnist      # cases whose name contains 'mnist'
    python -m benchmarks --threads 1         # only the pinned run
    python -m benchmarks --json out.json     # write results (default benchmarks/results/latest.json)
    python -m benchmarks --compare old.json  # flag nnframe regressions beyond noise

Each case times a full training step (forward, loss, backward, optimizer step) after warm-up:
the median over repeats of the mean step time within a repeat. Ratios compare nnframe with a
hand-written numpy loop of the same math, PyTorch CPU and scikit-learn when installed. Peak
memory is the growth of the process's peak RSS while the case runs (its own process).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
IMPLS = ("nnframe", "numpy", "torch", "sklearn")
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def all_cases() -> dict:
    from benchmarks import mlp

    cases = dict(mlp.cases())
    extras = ("benchmarks.bench_cnn", "benchmarks.bench_rnn", "benchmarks.attention")
    for extra in (*extras, "benchmarks.bench_graph"):
        module = __import__(extra, fromlist=["cases"])
        if hasattr(module, "cases"):  # each standalone script also offers its cases here
            cases.update(module.cases())
    return cases


# ---------------------------------------------------------------- worker (one process per run)
def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    return float("nan")


def reset_peak_rss() -> None:
    """Resets the kernel's peak-RSS mark (VmHWM) so that it measures what follows only."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def time_step(step, repeats: int, min_time: float, clock=time.perf_counter) -> list[float]:
    """Per-step seconds, one figure per repeat; each repeat runs enough steps to last
    ``min_time``. ``min_time=0`` is the smoke mode: one warm-up step, one timed step."""
    for _ in range(3 if min_time > 0 else 1):
        step()  # warm-up: lazy state, caches, first-touch allocations
    t0 = clock()
    step()
    inner = max(1, int(min_time / max(clock() - t0, 1e-9)))
    times = []
    for _ in range(repeats):
        t0 = clock()
        for _ in range(inner):
            step()
        times.append((clock() - t0) / inner)
    return times


def matmul_peak_gflops(repeats: int) -> float:
    """The machine's float32 GEMM throughput (best of repeats, 2048^3)."""
    import numpy as np

    a = np.random.default_rng(0).normal(size=(2048, 2048)).astype(np.float32)
    b = a.copy()
    a @ b
    best = min(time_step(lambda: a @ b, repeats, 0.2))
    return 2 * 2048**3 / best / 1e9


def worker(case: str, impl: str, threads: str, repeats: int, min_time: float) -> dict:
    if impl == "peak":
        return {"gflops": matmul_peak_gflops(repeats)}
    if impl == "torch":
        try:
            import torch
        except ImportError:
            return {"skipped": "torch not installed"}
        if threads == "1":
            torch.set_num_threads(1)
    if impl == "sklearn":
        try:
            import sklearn  # noqa: F401
        except ImportError:
            return {"skipped": "scikit-learn not installed"}
    builder, _ = all_cases()[case]
    step = builder(impl)
    if step is None:
        return {"skipped": "not applicable"}
    reset_peak_rss()  # peak = what the steps add: activations, gradients, optimizer state
    base = _status_mb("VmRSS")
    times = time_step(step, repeats, min_time)
    times.sort()
    median = times[len(times) // 2]
    return {
        "median_s": median,
        "spread": (times[-1] - times[0]) / median if median else 0.0,
        "times_s": times,
        "peak_mb": max(0.0, _status_mb("VmHWM") - base),
    }


def run_worker_process(module: str, threads: str, *args) -> dict:
    """Runs ``python -m <module> --worker <args>`` in a fresh process, its BLAS pools pinned to
    one thread when ``threads == "1"`` (else left to the libraries' defaults), and returns the
    JSON dict its last output line holds, or ``{"error": <last line of its stderr>}``."""
    env = dict(os.environ)
    for var in THREAD_VARS:
        if threads == "1":
            env[var] = "1"
        else:
            env.pop(var, None)
    cmd = [sys.executable, "-m", module, "--worker", *map(str, args)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_worker(case, impl, threads, repeats, min_time) -> dict:
    return run_worker_process("benchmarks.run", threads, case, impl, threads, repeats, min_time)


# ---------------------------------------------------------------- orchestration
def machine_info() -> dict:
    import numpy as np

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), ""
            )
    except OSError:
        pass
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [
            {k: d.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
            for d in threadpool_info()
        ]
    except ImportError:
        info["blas"] = "threadpoolctl not installed"
    for name in ("torch", "sklearn"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    return info


def run_suite(args) -> dict:
    cases = {k: v for k, v in all_cases().items() if args.filter in k}
    thread_settings = ["1", "default"] if args.threads == "both" else [args.threads]
    results = {"machine": machine_info(), "command": " ".join(sys.argv), "runs": []}
    for threads in thread_settings:
        peak = None
        if any(flops for _, flops in cases.values()):
            peak = run_worker("-", "peak", threads, args.repeats, args.min_time).get("gflops")
            results.setdefault("matmul_peak_gflops", {})[threads] = peak
        for name, (_, flops) in cases.items():
            row = {"case": name, "threads": threads, "impls": {}}
            for impl in args.impls:
                row["impls"][impl] = run_worker(name, impl, threads, args.repeats, args.min_time)
            add_ratios(row, flops, peak)
            results["runs"].append(row)
            print_row(row)
    return results


def add_ratios(row: dict, flops: float | None, peak: float | None) -> None:
    nf = row["impls"].get("nnframe", {}).get("median_s")
    ratios = {}
    for other in ("numpy", "torch", "sklearn"):
        t = row["impls"].get(other, {}).get("median_s")
        if nf and t:
            ratios[f"nnframe/{other}"] = nf / t
    if nf and flops and peak:
        ratios["nnframe_gflops"] = flops / nf / 1e9
        ratios["fraction_of_matmul_peak"] = flops / nf / 1e9 / peak
    row["ratios"] = ratios


def print_row(row: dict) -> None:
    def ms(impl):
        r = row["impls"].get(impl, {})
        return f"{r['median_s'] * 1e3:9.3f}" if "median_s" in r else f"{'-':>9}"

    def mem(impl):
        r = row["impls"].get(impl, {})
        return f"{r['peak_mb']:6.0f}" if "peak_mb" in r else f"{'-':>6}"

    r = row["ratios"]
    extra = ""
    if "fraction_of_matmul_peak" in r:
        extra = f"  {r['nnframe_gflops']:.0f} GFLOP/s = {r['fraction_of_matmul_peak']:.0%} of peak"
    print(
        f"{row['case']:<22} thr={row['threads']:<7} ms: nf {ms('nnframe')} np {ms('numpy')} "
        f"torch {ms('torch')} skl {ms('sklearn')} | nf/np {r.get('nnframe/numpy', 0):5.2f} "
        f"nf/torch {r.get('nnframe/torch', 0):5.2f} | peak MB nf {mem('nnframe')} torch "
        f"{mem('torch')}{extra}",
        flush=True,
    )


def compare(new: dict, old_path: str) -> list[str]:
    """nnframe runs slower than before by more than the noise of either measurement."""
    old = json.loads(pathlib.Path(old_path).read_text())
    index = {(r["case"], r["threads"]): r for r in old["runs"]}
    flagged = []
    for row in new["runs"]:
        before = index.get((row["case"], row["threads"]), {}).get("impls", {}).get("nnframe", {})
        now = row["impls"].get("nnframe", {})
        if "median_s" not in before or "median_s" not in now:
            continue
        noise = max(0.10, before.get("spread", 0), now.get("spread", 0))
        change = now["median_s"] / before["median_s"] - 1
        if change > noise:
            flagged.append(
                f"{row['case']} threads={row['threads']}: {before['median_s'] * 1e3:.3f} ms -> "
                f"{now['median_s'] * 1e3:.3f} ms (+{change:.0%}, noise {noise:.0%})"
            )
    return flagged


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        case, impl, threads, repeats, min_time = argv[1:6]
        print(json.dumps(worker(case, impl, threads, int(repeats), float(min_time))))
        return
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="3 repeats of >= 0.05 s")
    parser.add_argument("--smoke", action="store_true", help="one step per case (a test)")
    parser.add_argument("--filter", default="", help="only cases whose name contains this")
    parser.add_argument("--threads", choices=["1", "default", "both"], default="both")
    parser.add_argument("--impls", default=",".join(IMPLS), help="comma-separated implementations")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--min-time", type=float, default=None, help="seconds per repeat")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "latest.json"))
    parser.add_argument("--compare", default=None, help="an earlier JSON to flag regressions")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(all_cases()))
        return
    args.impls = [i for i in args.impls.split(",") if i]
    if args.smoke:
        args.repeats, args.min_time = 1, 0.0
    args.repeats = args.repeats or (3 if args.quick else 9)
    if args.min_time is None:
        args.min_time = 0.05 if args.quick else 0.3
    results = run_suite(args)
    out = pathlib.Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    if args.compare:
        flagged = compare(results, args.compare)
        print("\n".join(["regressions beyond noise:", *flagged]) if flagged else "no regressions")
        if flagged:
            sys.exit(1)


if __name__ == "__main__":
    main()
