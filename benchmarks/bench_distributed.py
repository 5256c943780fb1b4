"""Data-parallel scaling of the MNIST-size MLP (784-512-256-10) over MPI.

    python benchmarks/bench_distributed.py [--steps 60] [--ranks 1,2]

Launches itself under ``mpiexec -n K python -m mpi4py`` for each K (one BLAS thread per rank),
runs a fixed number of SGD steps with a per-rank batch of 128 (weak scaling: the global batch
grows with K), and reports throughput, scaling efficiency and the bytes allreduced per step.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def worker(steps: int) -> None:
    import numpy as np

    import nnframe as nf
    from nnframe.training.distributed import DataParallel, get_communicator

    comm = get_communicator()
    rng = np.random.default_rng(comm.rank)
    x = rng.normal(size=(128, 784)).astype(np.float32)
    y = rng.integers(0, 10, size=128)
    model = nf.Sequential(
        nf.Dense(784, 512, rng=0),
        nf.ReLU(),
        nf.Dense(512, 256, rng=1),
        nf.ReLU(),
        nf.Dense(256, 10, rng=2),
    )
    model.needs_input_grad = False
    dp = DataParallel(model, nf.optim.SGD(model.parameters(), lr=0.01, momentum=0.9), comm)
    loss_fn = nf.CrossEntropyLoss()

    def step():
        dp.zero_grad()
        loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        dp.step()

    for _ in range(5):
        step()
    comm.barrier()
    start = time.perf_counter()
    comm_time = 0.0
    for _ in range(steps):
        dp.zero_grad()
        loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        t0 = time.perf_counter()
        dp.average_gradients()
        comm_time += time.perf_counter() - t0
        dp.optimizer.step()
    comm.barrier()
    elapsed = time.perf_counter() - start
    if comm.is_root:
        print(
            json.dumps(
                {
                    "ranks": comm.size,
                    "steps": steps,
                    "seconds": elapsed,
                    "samples_per_s": steps * 128 * comm.size / elapsed,
                    "allreduce_ms_per_step": comm_time / steps * 1e3,
                    "bytes_per_step": dp.bytes_per_step,
                }
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.steps)
        return
    mpiexec = pathlib.Path(sys.executable).parent / "mpiexec"
    if not mpiexec.exists():
        sys.exit("mpiexec not found: pip install 'nnframe[mpi]'")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    results = []
    for k in (int(r) for r in args.ranks.split(",")):
        cmd = [
            str(mpiexec),
            "-n",
            str(k),
            sys.executable,
            "-m",
            "mpi4py",
            __file__,
            "--worker",
            "--steps",
            str(args.steps),
        ]
        out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = results[0]["samples_per_s"] / results[0]["ranks"]
    print(f"{'ranks':>5} {'samples/s':>11} {'efficiency':>10} {'allreduce ms':>12} {'MB/step':>8}")
    for r in results:
        efficiency = r["samples_per_s"] / (base * r["ranks"])
        print(
            f"{r['ranks']:>5} {r['samples_per_s']:>11,.0f} {efficiency:>10.0%} "
            f"{r['allreduce_ms_per_step']:>12.2f} {r['bytes_per_step'] / 1e6:>8.2f}"
        )


if __name__ == "__main__":
    main()
