"""Interleaved step timing: nnframe and its references in ONE process, step by step.

    OPENBLAS_NUM_THREADS=1 python -m benchmarks.interleaved                 # every case
    OPENBLAS_NUM_THREADS=1 python -m benchmarks.interleaved cnn_mnist 30    # one case, 30 rounds

Each round runs one step of every implementation (nnframe, the hand-written numpy loop where
there is one, PyTorch) after warm-up; the figures are the median step times and the median of
the paired per-round ratios nnframe / reference. On a shared, loaded machine this ratio is far
steadier than the ratio of two separate processes' medians: both implementations see the same
load. With OPENBLAS_NUM_THREADS=1 the clock is the process's CPU time (time.process_time) and
PyTorch runs one thread; otherwise wall time and every library's default threads (whose idle
threads then spin between calls and slow the other library down: prefer ``python -m
benchmarks --threads default`` there, one process per implementation).
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

# case -> rounds by default (steps of every implementation)
CASES = {
    "small_mlp_sgd": 300,
    "small_mlp_adam_clip": 300,
    "mnist_mlp_sgd": 60,
    "mnist_mlp_adam_clip": 60,
    "wide_mlp_sgd": 5,
    "cnn_mnist": 30,
    "cnn_cifar": 15,
    "rnn_lstm": 30,
    "rnn_lstm_adding": 30,
    "rnn_gru": 30,
    "attention": 30,
}


def builders(case: str) -> dict:
    """implementation -> a zero-argument builder of its step."""
    from benchmarks import attention, bench_cnn, bench_rnn, mlp

    if case.endswith("_mlp_sgd") or case.endswith("_mlp_adam_clip"):
        opt = "sgd" if case.endswith("_sgd") else "adam_clip"
        sizes, batch = mlp.SIZES[case[: -len(opt) - 1]]
        return {
            impl: (lambda impl=impl: mlp.IMPLEMENTATIONS[impl](sizes, batch, opt))
            for impl in ("nnframe", "numpy", "torch")
        }
    if case.startswith("cnn_"):
        return {
            fw: (lambda fw=fw: bench_cnn.make_step(case[4:], fw)) for fw in ("nnframe", "torch")
        }
    if case.startswith("rnn_"):
        kind, setting = {
            "rnn_lstm": ("LSTM", "classifier"),
            "rnn_gru": ("GRU", "classifier"),
            "rnn_lstm_adding": ("LSTM", "adding"),
        }[case]
        return {
            "nnframe": lambda: bench_rnn.nnframe_step(kind, setting),
            "torch": lambda: bench_rnn.torch_step(kind, setting=setting),
        }
    if case == "attention":
        return {"nnframe": attention.nnframe_step, "torch": attention.torch_step}
    raise ValueError(f"unknown case {case!r}; one of {sorted(CASES)}")


def measure(case: str, rounds: int) -> dict:
    pinned = os.environ.get("OPENBLAS_NUM_THREADS") == "1"
    clock = time.process_time if pinned else time.perf_counter
    steps = {}
    for impl, build in builders(case).items():
        if impl == "torch":
            try:
                import torch
            except ImportError:
                continue
            if pinned:
                torch.set_num_threads(1)
        steps[impl] = build()
    for _ in range(3):  # warm-up
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {impl: [] for impl in steps}
    for _ in range(rounds):
        for impl, step in steps.items():
            t0 = clock()
            step()
            times[impl].append(clock() - t0)
    result = {"case": case, "pinned": pinned, "rounds": rounds}
    for impl, t in times.items():
        result[f"{impl}_ms"] = round(float(np.median(t)) * 1e3, 3)
    nf = np.array(times["nnframe"])
    for other in ("numpy", "torch"):
        if other in times:
            result[f"nnframe/{other}"] = round(float(np.median(nf / np.array(times[other]))), 3)
    return result


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    cases = {argv[0]: int(argv[1]) if len(argv) > 1 else CASES[argv[0]]} if argv else CASES
    for case, rounds in cases.items():
        print(json.dumps(measure(case, rounds)), flush=True)


if __name__ == "__main__":
    main()
