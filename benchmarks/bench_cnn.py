"""Time one training step (forward, CrossEntropyLoss, backward, SGD with momentum) of three CNNs,
nnframe against PyTorch CPU (when installed), with one thread and with the default threads.

    python benchmarks/bench_cnn.py                # all cases, 1 thread and default threads
    python benchmarks/bench_cnn.py --threads 1 --cases mnist --repeats 30
    python benchmarks/bench_cnn.py --threads 1 --low-memory   # Conv*.save_columns = False

Cases (the issue's):
    mnist   batch 64, 1x28x28: Conv2d(1, 32, 3, pad 1), ReLU, MaxPool2d(2), Conv2d(32, 64, 3, pad 1),
            ReLU, MaxPool2d(2), Flatten, Dense(3136, 128), ReLU, Dense(128, 10)
    cifar   batch 64, 3x32x32: three blocks Conv2d(3x3, pad 1) + ReLU + MaxPool2d(2) with 32, 64,
            128 channels, Flatten, Dense(2048, 128), ReLU, Dense(128, 10)
    conv1d  batch 100, 1x40: three Conv1d(kernel 3, stride 2, pad 1) of 25 channels with ReLU,
            Flatten, Dense(125, 10)

Every (case, threads) setting runs in subprocesses, so that the thread count is set in the
environment before numpy or torch is imported (OPENBLAS_NUM_THREADS and friends; the child also
calls torch.set_num_threads). Timing with one thread: one child runs nnframe's and PyTorch's steps
interleaved (after warm-up), so both see the same machine load; it reports each median step time
and the median of the paired ratios. With the default threads each framework runs in its own
child (idle library threads spin after a call and would slow the other framework down). Memory: one child per framework, so its peak resident memory
(ru_maxrss, which includes the interpreter and the libraries) is its own; for nnframe the peak of
Python-visible allocations during the first two steps (tracemalloc, which sees numpy's buffers;
the model's parameters, allocated before, are not counted) is reported as well.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
CASES = ("mnist", "cifar", "conv1d")


# ---------------------------------------------------------------------------- models
def nnframe_model(case: str):
    import nnframe as nf

    def block(cin, cout, seed):
        return [nf.Conv2d(cin, cout, 3, padding=1, rng=seed), nf.ReLU(), nf.MaxPool2d(2)]

    if case == "mnist":
        layers = [*block(1, 32, 0), *block(32, 64, 1), nf.Flatten(), nf.Dense(3136, 128, rng=2)]
        layers += [nf.ReLU(), nf.Dense(128, 10, rng=3)]
        shape = (64, 1, 28, 28)
    elif case == "cifar":
        layers = [*block(3, 32, 0), *block(32, 64, 1), *block(64, 128, 2), nf.Flatten()]
        layers += [nf.Dense(2048, 128, rng=3), nf.ReLU(), nf.Dense(128, 10, rng=4)]
        shape = (64, 3, 32, 32)
    else:
        layers = []
        for i, cin in enumerate((1, 25, 25)):
            layers += [nf.Conv1d(cin, 25, 3, stride=2, padding=1, rng=i), nf.ReLU()]
        layers += [nf.Flatten(), nf.Dense(125, 10, rng=3)]
        shape = (100, 1, 40)
    return nf.Sequential(*layers), shape


def torch_model(case: str):
    import torch
    from torch import nn

    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]

    if case == "mnist":
        layers = [*block(1, 32), *block(32, 64), nn.Flatten(), nn.Linear(3136, 128)]
        layers += [nn.ReLU(), nn.Linear(128, 10)]
        shape = (64, 1, 28, 28)
    elif case == "cifar":
        layers = [*block(3, 32), *block(32, 64), *block(64, 128), nn.Flatten()]
        layers += [nn.Linear(2048, 128), nn.ReLU(), nn.Linear(128, 10)]
        shape = (64, 3, 32, 32)
    else:
        layers = []
        for cin in (1, 25, 25):
            layers += [nn.Conv1d(cin, 25, 3, stride=2, padding=1), nn.ReLU()]
        layers += [nn.Flatten(), nn.Linear(125, 10)]
        shape = (100, 1, 40)
    torch.manual_seed(0)
    return nn.Sequential(*layers), shape


# ---------------------------------------------------------------------------- child runs
def make_step(case: str, framework: str):
    """A closure running one training step of ``case`` in ``framework``."""
    import numpy as np

    rng = np.random.default_rng(0)
    if framework == "nnframe":
        import nnframe as nf

        if os.environ.get("BENCH_CNN_LOW_MEMORY") == "1":
            # keep only the input between forward and backward; rebuild the columns
            nf.Conv1d.save_columns = nf.Conv2d.save_columns = False
        model, shape = nnframe_model(case)
        model.needs_input_grad = False  # the images are data (PyTorch's x has no grad either)
        x = rng.normal(size=shape).astype(np.float32)
        y = rng.integers(0, 10, size=shape[0])
        loss = nf.CrossEntropyLoss()
        opt = nf.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            model.zero_grad()
            loss(model(x), y)
            model.backward(loss.backward())
            opt.step()

        return step
    import torch

    if os.environ.get("OPENBLAS_NUM_THREADS") == "1":
        torch.set_num_threads(1)
    model, shape = torch_model(case)
    x = torch.tensor(rng.normal(size=shape).astype(np.float32))
    y = torch.tensor(rng.integers(0, 10, size=shape[0]))
    loss = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad()
        loss(model(x), y).backward()
        opt.step()

    return step


def time_child(case: str, frameworks: list[str], warmup: int, repeats: int) -> dict:
    """Median step time of each framework, their steps interleaved so that both see the same
    machine load (the ratio is then far steadier than the times)."""
    import numpy as np

    steps = {fw: make_step(case, fw) for fw in frameworks}
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {fw: [] for fw in frameworks}
    for _ in range(repeats):
        for fw, step in steps.items():
            start = time.perf_counter()
            step()
            times[fw].append(time.perf_counter() - start)
    result = {fw: 1e3 * float(np.median(t)) for fw, t in times.items()}
    if len(frameworks) == 2:
        pairs = np.array(times["nnframe"]) / np.array(times["torch"])
        result["ratio"] = float(np.median(pairs))  # median of the paired ratios
    if "torch" in frameworks:
        import torch

        result["torch_threads"] = torch.get_num_threads()
    return result


def memory_child(case: str, framework: str) -> dict:
    """Peak memory of a few steps: resident (ru_maxrss, the whole process) and, for nnframe,
    the peak of Python-visible allocations during two steps (tracemalloc sees numpy's buffers)."""
    import resource
    import tracemalloc

    result = {}
    if framework == "nnframe":
        # traced from before the first step, so buffers a layer keeps between steps count
        step = make_step(case, framework)
        tracemalloc.start()
        step()
        step()
        result["traced_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    else:
        step = make_step(case, framework)
        step()
        step()
    result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def spawn(what: str, one_thread: bool, args) -> dict | None:
    env = dict(os.environ)
    if args.low_memory:
        env["BENCH_CNN_LOW_MEMORY"] = "1"
    for var in THREAD_VARS:
        if one_thread:
            env[var] = "1"
        else:
            env.pop(var, None)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", what]
    cmd += ["--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"{what} failed:\n{done.stderr}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--threads", nargs="+", default=["1", "default"], choices=["1", "default"])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20, help="(x10 for conv1d)")
    parser.add_argument(
        "--low-memory",
        action="store_true",
        help="nnframe's strided convolutions rebuild their columns in backward "
        "(save_columns=False); stride-1 ones, all of the CNN cases', always do",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, case, frameworks = args.child.split(":")
        frameworks = frameworks.split(",")
        repeats = args.repeats * (10 if case == "conv1d" else 1)
        if kind == "time":
            result = time_child(case, frameworks, args.warmup, repeats)
        else:
            result = memory_child(case, frameworks[0])
        print(json.dumps(result))
        return

    try:
        import torch  # noqa: F401

        frameworks = ["nnframe", "torch"]
    except ImportError:
        frameworks = ["nnframe"]
        print("PyTorch is not installed: nnframe only")
    header = (
        f"{'case':8} {'threads':>8} {'nnframe ms':>11} {'torch ms':>9} {'ratio':>6} "
        f"{'nf traced MB':>13} {'nf rss MB':>10} {'torch rss MB':>13}"
    )
    print(header)
    print("-" * len(header))
    for threads in args.threads:
        one = threads == "1"
        for case in args.cases:
            if one:
                t = spawn(f"time:{case}:{','.join(frameworks)}", one, args)
            else:
                # with several threads each library's idle threads spin for a while after a
                # call and would slow the other one down: time each in its own process
                t = {}
                for fw in frameworks:
                    t.update(spawn(f"time:{case}:{fw}", one, args) or {})
                if "nnframe" in t and "torch" in t:
                    t["ratio"] = t["nnframe"] / t["torch"]  # ratio of the medians
            if not t or "nnframe" not in t:
                continue
            mem = {fw: spawn(f"memory:{case}:{fw}", one, args) or {} for fw in frameworks}
            has_torch = "torch" in t
            t_ms = f"{t['torch']:9.2f}" if has_torch else f"{'-':>9}"
            ratio = f"{t['ratio']:6.2f}" if has_torch else f"{'-':>6}"
            t_rss = mem.get("torch", {}).get("maxrss_mb")
            t_rss = f"{t_rss:13.0f}" if t_rss else f"{'-':>13}"
            label = "1" if one else f"{t.get('torch_threads', 'def')}*"
            nf_mem = mem["nnframe"]
            print(
                f"{case:8} {label:>8} {t['nnframe']:11.2f} {t_ms} {ratio} "
                f"{nf_mem.get('traced_mb', float('nan')):13.1f} "
                f"{nf_mem.get('maxrss_mb', float('nan')):10.0f} {t_rss}",
                flush=True,
            )
    print(
        "threads: 1 = OPENBLAS/OMP/MKL_NUM_THREADS=1 and torch.set_num_threads(1); "
        "N* = library defaults (N = torch's threads).\nratio: with 1 thread, the median over "
        "repeats of the paired step-time ratio nnframe / torch (steps interleaved in one "
        "process); with N*, the ratio of the medians (one process each)."
    )


if __name__ == "__main__":
    main()


def cases() -> dict:
    """The same steps in the format of ``benchmarks/run.py``: name -> (builder, flops)."""
    return {
        f"cnn_{case}_train": (
            lambda impl, c=case: make_step(c, impl) if impl in ("nnframe", "torch") else None,
            None,
        )
        for case in CASES
    }
