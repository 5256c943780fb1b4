"""GPU benchmark (issue 18): nnframe on CuPy against PyTorch CUDA, on the same GPU.

    python -m benchmarks.gpu                 # every case (about 2-4 minutes on an H200)
    python -m benchmarks.gpu --quick         # fewer, shorter repeats
    python -m benchmarks.gpu --smoke         # one step per case: checks the script, times nothing
    python -m benchmarks.gpu --cases mnist_mlp lstm
    python -m benchmarks.gpu --smoke --device cpu   # the same steps on the CPU (numpy, torch CPU):
                                                    # checks this script where there is no GPU

Without CuPy or a GPU it prints ``skipped: no GPU/CuPy (...)`` and exits with 0.

Each case times one training step (zero_grad, forward, the loss as a Python number, backward,
optimizer step) on a pool of batches that already live on the GPU, so no host-to-device copy
is timed; both frameworks start from the same weights (their first losses are printed side by
side as a check of the same math). After warm-up (CuPy compiles its kernels on first use) the
two frameworks' repeats alternate, each repeat synchronized before and after
(``cupy.cuda.Device().synchronize()``, ``torch.cuda.synchronize()``) and long enough to
average many steps; the figure is the median over repeats, the ratio nnframe / PyTorch.

Cases and the issue's goals (ratio at most):
    mnist_mlp        784-512-256-10, batch 1024, SGD with momentum            1.5
    wide_mlp         1024-4096-4096-1024, batch 256, SGD with momentum        1.3
    mnist_cnn        benchmarks/bench_cnn.py's MNIST model, batch 512, SGD    2.0
    lstm, gru        benchmarks/bench_rnn.py's classifier (T=50, input 32,
                     hidden 128, Dense head), batch 512, Adam                  3.0
    mnist_mlp_8192   the MNIST MLP at batch 8192: a point where the GPU is busy (no goal)

Where the time goes: ``host %`` is the process's CPU time (``time.process_time``) over the
wall time of the same steps. The driver is asked to block, not spin, while the host waits for
the GPU (``CU_CTX_SCHED_BLOCKING_SYNC``, set before any CUDA context exists; ``--spin`` leaves
the driver's default), so CPU time is the Python and the kernel launches: near 100% the step
is bound by the host, well below it by the GPU. Where PyTorch's profiler can see the kernels
(CUPTI sees every kernel of the process, CuPy's too), ``kern/step`` is the kernels launched
per step and ``busy %`` the share of the wall time the GPU spent in them; the rest is the GPU
waiting for Python and launches.

Results: one table row per case, and JSON in benchmarks/results/gpu.json (``--json`` for
another path; ``--smoke`` writes none unless asked).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import sys
import time
import traceback

import numpy as np

from benchmarks import bench_cnn, bench_rnn, mlp
from nnframe.core.device import cuda_missing

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "gpu.json"
RNN_POOL = 8  # batches cycled through (bench_rnn's pool)
CNN_POOL = 8


# ---------------------------------------------------------------------------- the machine
def blocking_sync() -> str:
    """Asks the driver to block (not spin) the host thread that waits for GPU 0, so that the
    process's CPU time is its own work. Must run before any CUDA context exists (CuPy and
    PyTorch share the device's primary context). Returns what happened, for the record."""
    import ctypes

    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as error:
        return f"not set: {error}"
    device = ctypes.c_int()
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(device), 0) != 0:
        return "not set: cuInit/cuDeviceGet failed"
    setter = getattr(cuda, "cuDevicePrimaryCtxSetFlags_v2", None) or cuda.cuDevicePrimaryCtxSetFlags
    code = setter(device, 0x04)  # CU_CTX_SCHED_BLOCKING_SYNC
    return "set" if code == 0 else f"not set: CUresult {code}"


def describe(device: str, sync_mode: str) -> dict:
    out = {"platform": platform.platform(), "python": platform.python_version()}
    out["numpy"] = np.__version__
    out["device"] = device
    if device == "cuda":
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        out["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
        out["gpu_count"] = cupy.cuda.runtime.getDeviceCount()
        out["cupy"] = cupy.__version__
        out["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        out["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
        out["blocking_sync"] = sync_mode
    torch = _torch(device)
    out["torch"] = getattr(torch, "__version__", None) if torch else None
    if torch is not None and device == "cuda":
        out["torch_cudnn"] = torch.backends.cudnn.version()
        out["torch_tf32"] = "off (full float32, as CuPy's default)"
    return out


def _torch(device: str):
    """torch, where it can run on ``device``; else None."""
    try:
        import torch
    except ImportError:
        return None
    if device == "cuda":
        if not torch.cuda.is_available():
            return None
        # full float32 math in both frameworks: cuDNN's convolutions would otherwise use TF32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return torch


def synchronizer(framework: str, device: str):
    if device != "cuda":
        return lambda: None
    if framework == "torch":
        import torch

        return torch.cuda.synchronize
    import cupy

    return lambda: cupy.cuda.Device().synchronize()


# ---------------------------------------------------------------------------- nnframe steps
def _nf_step(model, loss_fn, opt, xs, ys):
    """One training step on batch i of the device pools; returns the loss as a float."""
    nxt = mlp.cycle(len(xs))

    def step():
        i = nxt()
        opt.zero_grad()
        value = loss_fn(model(xs[i]), ys[i])
        model.backward(loss_fn.backward())
        opt.step()
        return float(value)

    return step


def nf_mlp(sizes, batch, device):
    import nnframe as nf

    model = mlp.nnframe_model(sizes).to(device)
    xs, ys = nf.to_device(mlp.make_data(sizes, batch), device)
    opt = nf.optim.SGD(model.parameters(), lr=mlp.LR, momentum=mlp.MOMENTUM)
    return _nf_step(model, nf.CrossEntropyLoss(), opt, xs, ys)


def _cnn_data(batch):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(CNN_POOL, batch, 1, 28, 28)).astype(np.float32)
    return x, rng.integers(0, 10, size=(CNN_POOL, batch))


def nf_cnn(batch, device):
    import nnframe as nf

    model, _ = bench_cnn.nnframe_model("mnist")
    model.needs_input_grad = False  # the images are data
    model.to(device)
    xs, ys = nf.to_device(_cnn_data(batch), device)
    opt = nf.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return _nf_step(model, nf.CrossEntropyLoss(), opt, xs, ys)


def _rnn_data(batch):
    _, t, f, _, classes, _ = bench_rnn.SETTINGS["classifier"]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(RNN_POOL, batch, t, f)).astype(np.float32)
    return x, rng.integers(0, classes, size=(RNN_POOL, batch))


def nf_rnn(kind, batch, device):
    import nnframe as nf

    model = bench_rnn._nnframe_model(kind).to(device)
    xs, ys = nf.to_device(_rnn_data(batch), device)
    opt = nf.optim.Adam(model.parameters(), lr=bench_rnn.LR)
    return _nf_step(model, nf.CrossEntropyLoss(), opt, xs, ys)


# ---------------------------------------------------------------------------- PyTorch steps
def _torch_step(torch, forward, opt, xs, ys):
    loss_fn = torch.nn.CrossEntropyLoss()
    nxt = mlp.cycle(len(xs))

    def step():
        i = nxt()
        opt.zero_grad()
        value = loss_fn(forward(xs[i]), ys[i])
        value.backward()
        opt.step()
        return value.item()  # the loss as a number, as nnframe gives it

    return step


def _torch_data(torch, arrays, device):
    return [torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays]


def _load(torch, module, state, prefix=""):
    """Copies nnframe's weights (same names and layouts as PyTorch's) into ``module``."""
    own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    module.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in own.items()})


def torch_mlp(torch, sizes, batch, device):
    model = mlp.torch_model(sizes).to(device)  # nnframe_model's weights
    xs, ys = _torch_data(torch, mlp.make_data(sizes, batch), device)
    opt = torch.optim.SGD(model.parameters(), lr=mlp.LR, momentum=mlp.MOMENTUM)
    return _torch_step(torch, model, opt, xs, ys)


def torch_cnn(torch, batch, device):
    model, _ = bench_cnn.torch_model("mnist")
    _load(torch, model, bench_cnn.nnframe_model("mnist")[0].state_dict())
    model.to(device)
    xs, ys = _torch_data(torch, _cnn_data(batch), device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return _torch_step(torch, model, opt, xs, ys)


def torch_rnn(torch, kind, batch, device):
    _, _, f, hidden, classes, _ = bench_rnn.SETTINGS["classifier"]
    rnn = getattr(torch.nn, kind)(f, hidden, batch_first=True)
    head = torch.nn.Linear(hidden, classes)
    state = bench_rnn._nnframe_model(kind).state_dict()  # the same initial weights
    _load(torch, rnn, state, "rnn.")
    _load(torch, head, state, "head.")
    rnn.to(device)
    head.to(device)

    def forward(x):
        _, h = rnn(x)
        h_n = h[0] if kind == "LSTM" else h
        return head(h_n[-1])

    params = [*rnn.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=bench_rnn.LR)
    xs, ys = _torch_data(torch, _rnn_data(batch), device)
    return _torch_step(torch, forward, opt, xs, ys)


MNIST, WIDE = mlp.SIZES["mnist_mlp"][0], mlp.SIZES["wide_mlp"][0]


# name -> (what, batch, goal (max ratio) or None, nnframe builder, torch builder)
def _mlp_case(what: str, sizes, batch: int, goal):
    """A CASES entry for an MLP of ``sizes``."""
    return (
        what, batch, goal,
        lambda b, d: nf_mlp(sizes, b, d), lambda t, b, d: torch_mlp(t, sizes, b, d),
    )  # fmt: skip


def _rnn_case(kind: str):
    """A CASES entry for bench_rnn's classifier with an LSTM or GRU."""
    return (
        f"{kind} T=50 h=128 + Dense, Adam", 512, 3.0,
        lambda b, d: nf_rnn(kind, b, d), lambda t, b, d: torch_rnn(t, kind, b, d),
    )  # fmt: skip


# case -> (what, batch, the issue's goal or None, nnframe step builder, PyTorch step builder)
CASES = {
    "mnist_mlp": _mlp_case("MLP 784-512-256-10, SGD", MNIST, 1024, 1.5),
    "wide_mlp": _mlp_case("MLP 1024-4096-4096-1024, SGD", WIDE, 256, 1.3),
    "mnist_cnn": ("bench_cnn MNIST CNN, SGD", 512, 2.0, nf_cnn, torch_cnn),
    "lstm": _rnn_case("LSTM"),
    "gru": _rnn_case("GRU"),
    "mnist_mlp_8192": _mlp_case("MLP 784-512-256-10, SGD (GPU busy)", MNIST, 8192, None),
}


# ---------------------------------------------------------------------------- timing
def time_pair(steps: dict, syncs: dict, warmup: int, repeats: int, min_time: float) -> dict:
    """Alternating synchronized repeats of each framework's step: per framework the median
    wall and CPU time per step (ms) and the host share; ``repeats=0`` times one step."""
    out = {fw: {"first_loss": steps[fw]()} for fw in steps}  # also compiles CuPy's kernels
    for fw in steps:
        for _ in range(warmup):
            steps[fw]()
    inner = {}
    for fw in steps:  # steps per repeat: enough to last min_time
        syncs[fw]()
        t0 = time.perf_counter()
        steps[fw]()
        syncs[fw]()
        one = time.perf_counter() - t0
        inner[fw] = max(1, int(min_time / max(one, 1e-6)))
        out[fw]["single_ms"] = one * 1e3
    walls = {fw: [] for fw in steps}
    cpus = {fw: [] for fw in steps}
    order = list(steps)
    for r in range(repeats):
        for fw in order if r % 2 == 0 else order[::-1]:  # alternate who goes first
            syncs[fw]()
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(inner[fw]):
                steps[fw]()
            syncs[fw]()
            walls[fw].append((time.perf_counter() - w0) / inner[fw])
            cpus[fw].append((time.process_time() - c0) / inner[fw])
    for fw in steps:
        if repeats == 0:
            out[fw]["median_ms"] = out[fw]["single_ms"]
            continue
        out[fw]["median_ms"] = statistics.median(walls[fw]) * 1e3
        out[fw]["cpu_ms"] = statistics.median(cpus[fw]) * 1e3
        out[fw]["host_share"] = statistics.median(c / w for c, w in zip(cpus[fw], walls[fw]))
        out[fw]["steps_per_repeat"] = inner[fw]
        out[fw]["times_ms"] = [w * 1e3 for w in walls[fw]]
    if "torch" in steps and repeats > 0:
        paired = [a / b for a, b in zip(walls["nnframe"], walls["torch"])]
        out["paired_ratio"] = statistics.median(paired)
    return out


def kernel_profile(step, sync, wall_ms: float, steps: int = 5) -> dict | None:
    """Kernels per step and the GPU's busy share, from PyTorch's profiler (CUPTI sees every
    kernel of the process, CuPy's included); None where it cannot tell."""
    try:
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity, profile
    except ImportError:
        return None
    try:
        sync()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                step()
            sync()
        kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    except Exception as error:  # a profiler that cannot start (CUPTI missing, busy)
        return {"error": f"{type(error).__name__}: {error}"}
    if not kernels:
        return None
    busy_us = sum(e.time_range.end - e.time_range.start for e in kernels) / steps
    return {
        "kernels_per_step": len(kernels) / steps,
        "gpu_busy_ms": busy_us / 1e3,
        "gpu_busy_share": busy_us / 1e3 / wall_ms if wall_ms else None,
    }


# ---------------------------------------------------------------------------- the table
def _f(value, spec, width):
    return f"{value:{width}{spec}}" if isinstance(value, (int, float)) else f"{'-':>{width}}"


HEADER = (
    f"{'case':<15} {'batch':>5} {'nf ms':>8} {'torch ms':>8} {'ratio':>6} {'goal':>5} "
    f"{'met':>4} {'nf host%':>8} {'pt host%':>8}  first loss nf / torch"
)
PROFILE_HEADER = (
    f"{'case':<15} {'nf kern/step':>12} {'nf busy ms':>10} {'nf busy%':>8} "
    f"{'pt kern/step':>12} {'pt busy ms':>10} {'pt busy%':>8}"
)


def row_text(name: str, row: dict) -> str:
    nf, pt = row["nnframe"], row.get("torch", {})

    def pct(d, key):
        v = d.get(key)
        return None if v is None else 100 * v

    met = {True: "yes", False: "NO", None: "-"}[row.get("met")]
    losses = f"{nf['first_loss']:.5f} / " + (
        f"{pt['first_loss']:.5f}" if "first_loss" in pt else "-"
    )
    return (
        f"{name:<15} {row['batch']:>5} {_f(nf.get('median_ms'), '.2f', 8)} "
        f"{_f(pt.get('median_ms'), '.2f', 8)} {_f(row.get('ratio'), '.2f', 6)} "
        f"{_f(row.get('goal'), '.1f', 5)} {met:>4} {_f(pct(nf, 'host_share'), '.0f', 8)} "
        f"{_f(pct(pt, 'host_share'), '.0f', 8)}  {losses}"
    )


def profile_text(name: str, row: dict) -> str:
    line = f"{name:<15}"
    for fw in ("nnframe", "torch"):
        prof = (row.get(fw) or {}).get("profile") or {}
        share = prof.get("gpu_busy_share")
        line += (
            f" {_f(prof.get('kernels_per_step'), '.0f', 12)} {_f(prof.get('gpu_busy_ms'), '.2f', 10)}"
            f" {_f(None if share is None else 100 * share, '.0f', 8)}"
        )
    return line


def run_case(name, device, torch, warmup, repeats, min_time) -> tuple[dict, dict, dict]:
    """The case's table row, and its steps and synchronizers (for the profile pass)."""
    what, batch, goal, nf_build, torch_build = CASES[name]
    steps = {"nnframe": nf_build(batch, device)}
    if torch is not None:
        steps["torch"] = torch_build(torch, batch, device)
    syncs = {fw: synchronizer(fw, device) for fw in steps}
    timed = time_pair(steps, syncs, warmup, repeats, min_time)
    row = {"case": name, "what": what, "batch": batch, "goal": goal}
    row.update({fw: timed[fw] for fw in steps})
    if "torch" in steps:
        row["ratio"] = timed["nnframe"]["median_ms"] / timed["torch"]["median_ms"]
        row["paired_ratio"] = timed.get("paired_ratio")
        timed_on_gpu = device == "cuda" and repeats > 0
        row["met"] = row["ratio"] <= goal if goal is not None and timed_on_gpu else None
        a, b = timed["nnframe"]["first_loss"], timed["torch"]["first_loss"]
        row["same_first_loss"] = abs(a - b) <= 1e-3 * max(1.0, abs(b))
    return row, steps, syncs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    mode.add_argument("--smoke", action="store_true", help="one step per case, no timing")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--json", help=f"results file (default {DEFAULT_JSON.relative_to(ROOT)})")
    parser.add_argument("--spin", action="store_true", help="leave the driver's wait mode")
    parser.add_argument("--no-profile", action="store_true", help="skip the kernel profile")
    args = parser.parse_args(argv)

    sync_mode = "not applicable"
    if args.device == "cuda":
        why = cuda_missing()  # imports CuPy; creates no CUDA context
        if why is not None:
            print(f"skipped: no GPU/CuPy ({why})")
            return 0
        sync_mode = "left to the driver (--spin)" if args.spin else blocking_sync()
    torch = _torch(args.device)
    if args.smoke:
        warmup, repeats, min_time = 0, 0, 0.0
    elif args.quick:
        warmup, repeats, min_time = 3, 5, 0.2
    else:
        warmup, repeats, min_time = 5, 11, 0.4
    machine = describe(args.device, sync_mode)
    print(
        f"nnframe vs PyTorch, training step on {machine.get('gpu', args.device)}; "
        f"{'smoke: one step per case' if args.smoke else f'median of {repeats} repeats'}"
        + ("" if torch else "; PyTorch for this device is not installed: nnframe only")
    )
    print(HEADER)
    rows, kept = [], []
    failed = []
    for name in args.cases:
        try:
            row, steps, syncs = run_case(name, args.device, torch, warmup, repeats, min_time)
        except Exception:  # one broken case must not hide the others' figures
            print(f"{name:<15} FAILED:\n{traceback.format_exc()}", flush=True)
            failed.append(name)
            continue
        rows.append(row)
        kept.append((steps, syncs))
        print(row_text(name, row), flush=True)
        if row.get("same_first_loss") is False:
            print(f"  warning: {name}: the first losses differ: not the same math", flush=True)
    print(
        "ratio = nnframe / PyTorch (median ms); met: ratio <= goal (the issue's); host% = CPU "
        "time / wall time of the same steps (near 100: bound by Python and kernel launches). "
        f"Driver wait mode: {sync_mode}."
    )
    if args.device == "cuda" and torch is not None and not args.no_profile and not args.smoke:
        # after every timing, so that the profiler cannot slow a timed case down
        print("\nwhere the time goes (PyTorch's profiler, 5 steps; '-': it saw no kernels)")
        print(PROFILE_HEADER)
        for row, (steps, syncs) in zip(rows, kept):
            name = row["case"]
            for fw in steps:
                row[fw]["profile"] = kernel_profile(steps[fw], syncs[fw], row[fw]["median_ms"])
            print(profile_text(name, row), flush=True)
        print("busy% = GPU time in kernels and copies / wall time; the rest the GPU waits")
    out_path = args.json or (None if args.smoke or args.device != "cuda" else str(DEFAULT_JSON))
    if out_path:
        mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
        result = {
            "machine": machine,
            "command": " ".join(["python -m benchmarks.gpu", *sys.argv[1:]]),
            "mode": mode_name,
            "runs": rows,
        }
        pathlib.Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(out_path).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {out_path}")
    if failed:
        print(f"failed cases: {' '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
