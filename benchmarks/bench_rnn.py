"""Recurrent training step: nnframe vs PyTorch CPU, LSTM and GRU.

    python -m benchmarks.bench_rnn               # threads pinned to 1, then the default
    python -m benchmarks.bench_rnn --quick       # fewer repeats
    python -m benchmarks.bench_rnn --threads 1   # only the pinned run
    python -m benchmarks.bench_rnn --threads 1 --clock cpu   # CPU time: steadier when shared

One step = zero_grad, forward, a Dense head on the last hidden state, the loss, backward through
time, optimizer step, on one of 8 cycled batches. Two settings: the classifier (batch 64, T=50,
input 32, hidden 128, 10 classes, cross-entropy; LSTM and GRU) and the adding problem (LSTM,
batch 64, T=100, 2 features: a value and a marker, hidden 64, one output, MSE). The optimizer is Adam
(``nf.optim.Adam``) when nnframe has it, else SGD with momentum, and PyTorch uses the same one.
Both frameworks start from the same weights. Each (implementation, thread setting) runs in its
own process so that the BLAS thread count is fixed before numpy loads. The figure is the median
over repeats of the mean step time within a repeat; the ratio is nnframe / PyTorch. PyTorch
runs its LSTM as one fused oneDNN call on CPU; the 'native' column turns oneDNN off, which gives
PyTorch's own per-step kernels (the same structure as nnframe's).

``cases()`` exposes the same steps in the format of ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks.run import run_worker_process, time_step

LR = 1e-3
POOL = 8  # batches cycled through, as the measurements (one repeated batch is memorized)
# case -> (batch, T, input features, hidden, outputs, loss): the classifier (10 classes,
# cross-entropy) and the adding problem (2 features: value and marker; one output, MSE)
SETTINGS = {
    "classifier": (64, 50, 32, 128, 10, "ce"),
    "adding": (64, 100, 2, 64, 1, "mse"),
}
BATCH, T, INPUT, HIDDEN, CLASSES, _ = SETTINGS["classifier"]


def make_data(setting="classifier", seed=0):
    """POOL batches: x (POOL, N, T, F) float32 and targets (class indices, or float sums)."""
    import numpy as np

    n, t, f, _, out, loss = SETTINGS[setting]
    rng = np.random.default_rng(seed)
    if loss == "ce":
        x = rng.normal(size=(POOL, n, t, f)).astype(np.float32)
        return x, rng.integers(0, out, size=(POOL, n))
    values = rng.uniform(0, 1, size=(POOL, n, t))
    markers = np.zeros((POOL, n, t))
    for row in markers.reshape(-1, t):
        row[rng.choice(t, size=2, replace=False)] = 1
    x = np.stack([values, markers], axis=3).astype(np.float32)
    return x, (values * markers).sum(axis=2)[..., None].astype(np.float32)


def optimizer_name() -> str:
    import nnframe as nf

    return "adam" if hasattr(nf.optim, "Adam") else "sgd"


def _nnframe_model(kind: str, setting: str = "classifier"):
    import nnframe as nf

    _, _, f, hidden, out, _ = SETTINGS[setting]

    class Classifier(nf.Module):
        """RNN over the sequence, Dense on the last layer's final hidden state."""

        def __init__(self):
            super().__init__()
            self.rnn = getattr(nf, kind)(f, hidden, rng=0)
            self.rnn.needs_input_grad = False  # x is data, as in the PyTorch version
            self.head = nf.Dense(hidden, out, rng=1)

        def forward(self, x):
            _, state = self.rnn(x)
            h_n = state[0] if kind == "LSTM" else state
            return self.head(h_n[-1])

        def backward(self, grad_output):
            g_h = self.head.backward(grad_output)[None]  # dL/dh_n: (1, N, H)
            grad_state = (g_h, None) if kind == "LSTM" else g_h
            return self.rnn.backward((None, grad_state))

    return Classifier()


def _cycle():
    state = [-1]

    def nxt():
        state[0] = (state[0] + 1) % POOL
        return state[0]

    return nxt


def nnframe_step(kind: str, setting: str = "classifier"):
    import nnframe as nf

    model = _nnframe_model(kind, setting)
    x, y = make_data(setting)
    nxt = _cycle()
    loss_fn = nf.CrossEntropyLoss() if SETTINGS[setting][-1] == "ce" else nf.MSELoss()
    if optimizer_name() == "adam":
        opt = nf.optim.Adam(model.parameters(), lr=LR)
    else:
        opt = nf.optim.SGD(model.parameters(), lr=LR, momentum=0.9)

    def step():
        i = nxt()
        opt.zero_grad()
        loss_fn(model(x[i]), y[i])
        model.backward(loss_fn.backward())
        opt.step()

    return step


def torch_step(kind: str, onednn: bool = True, setting: str = "classifier"):
    import torch

    _, _, f, hidden, out, loss = SETTINGS[setting]
    nf_model = _nnframe_model(kind, setting)  # the same initial weights as nnframe's
    rnn = getattr(torch.nn, kind)(f, hidden, batch_first=True)
    head = torch.nn.Linear(hidden, out)
    state = nf_model.state_dict()
    rnn.load_state_dict({k[4:]: torch.from_numpy(v) for k, v in state.items() if k[:4] == "rnn."})
    head.load_state_dict({k[5:]: torch.from_numpy(v) for k, v in state.items() if k[:5] == "head."})
    params = [*rnn.parameters(), *head.parameters()]
    if optimizer_name() == "adam":
        opt = torch.optim.Adam(params, lr=LR)
    else:
        opt = torch.optim.SGD(params, lr=LR, momentum=0.9)
    x, y = make_data(setting)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    nxt = _cycle()
    loss_fn = torch.nn.CrossEntropyLoss() if loss == "ce" else torch.nn.MSELoss()

    def step():
        i = nxt()
        with torch.backends.mkldnn.flags(enabled=onednn):
            opt.zero_grad()
            _, state = rnn(xt[i])
            h_n = state[0] if kind == "LSTM" else state
            value = loss_fn(head(h_n[-1]), yt[i])
            value.backward()
            value.item()  # the loss as a number, as nnframe gives it
            opt.step()

    return step


IMPLEMENTATIONS = {
    "nnframe": nnframe_step,
    "torch": torch_step,
    # PyTorch with oneDNN off: its own per-step kernels (the LSTM is otherwise one fused oneDNN call)
    "torch_native": lambda kind, setting="classifier": torch_step(kind, False, setting),
}
# (kind, setting) pairs run by main() and offered by cases()
RUNS = (("LSTM", "classifier"), ("GRU", "classifier"), ("LSTM", "adding"))


def _name(kind: str, setting: str) -> str:
    return kind if setting == "classifier" else f"{kind}-{setting}"


def _parse(name: str) -> tuple[str, str]:
    kind, _, setting = name.partition("-")
    return kind, setting or "classifier"


def cases() -> dict:
    """name -> (builder(impl) -> step or None, flops per step or None), as benchmarks/run.py."""
    return {
        f"rnn_{kind.lower()}{'' if s == 'classifier' else '_' + s}_train": (
            lambda impl, k=kind, s=s: (
                IMPLEMENTATIONS[impl](k, setting=s) if impl in IMPLEMENTATIONS else None
            ),
            None,
        )
        for kind, s in RUNS
    }


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def worker(kind: str, impl: str, threads: str, repeats: int, min_time: float, clock: str) -> dict:
    if impl.startswith("torch"):
        try:
            import torch
        except ImportError:
            return {"skipped": "torch not installed"}
        if threads == "1":
            torch.set_num_threads(1)
    kind, setting = _parse(kind)
    step = IMPLEMENTATIONS[impl](kind, setting=setting)
    times = sorted(time_step(step, repeats, min_time, CLOCKS[clock]))
    return {"median_s": times[len(times) // 2], "times_s": times}


def run_worker(kind, impl, threads, repeats, min_time, clock) -> dict:
    args = kind, impl, threads, repeats, min_time, clock
    return run_worker_process("benchmarks.bench_rnn", threads, *args)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, shorter timings")
    parser.add_argument("--threads", choices=("1", "default", "both"), default="both")
    parser.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="wall",
        help="wall time (default), or the process's CPU time: steadier on a shared machine, "
        "comparable only with --threads 1",
    )
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, impl, threads, repeats, min_time, clock = args.worker
        print(json.dumps(worker(kind, impl, threads, int(repeats), float(min_time), clock)))
        return
    repeats, min_time = (3, 0.3) if args.quick else (7, 1.0)
    settings = ("1", "default") if args.threads == "both" else (args.threads,)
    print(
        f"training step: batch {BATCH}, T={T}, input {INPUT}, hidden {HIDDEN}, Dense head, "
        f"optimizer {optimizer_name()}; median of {repeats} repeats, {args.clock} clock"
    )
    print("ratio = nnframe / torch; 'native' = torch with oneDNN off (its own per-step kernels)")
    header = f"{'case':<13} {'threads':<8} {'nnframe ms':>11} {'torch ms':>9} {'ratio':>6}"
    print(header + f" {'native ms':>10} {'ratio':>6}")
    for threads in settings:
        for kind, setting in RUNS:
            kind = _name(kind, setting)
            res = {
                impl: run_worker(kind, impl, threads, repeats, min_time, args.clock)
                for impl in IMPLEMENTATIONS
            }
            a = res["nnframe"]
            if "median_s" not in a:
                print(f"{kind:<13} {threads:<8} nnframe: {a}")
                continue
            line = f"{kind:<13} {threads:<8} {a['median_s'] * 1e3:>11.2f}"
            for impl, width in (("torch", 9), ("torch_native", 10)):
                b = res[impl]
                if "median_s" not in b:
                    line += f" {impl}: {b.get('skipped') or b.get('error')}"
                    continue
                ratio = a["median_s"] / b["median_s"]
                line += f" {b['median_s'] * 1e3:>{width}.2f} {ratio:>5.2f}x"
            print(line)


if __name__ == "__main__":
    main()
