"""Graph model vs Sequential: the cost of the graph machinery on a chain.

An MNIST-sized MLP (784-256-128-10, ReLU), batch 128, one BLAS thread: the same layers and
weights run as a ``Sequential`` (benchmarks/mlp.py's step) and as an ``nf.Model`` built from
``nf.Input``; one training step each (forward, cross-entropy, backward with
``needs_input_grad=False``, SGD with momentum), cycling through the same pool of batches.
The two are timed *interleaved* (short rounds, alternating which goes first, so that load from
other processes hits both alike) and the ratio is the median of the per-round ratios, with the
medians of the step times. Issue 13 asks for a ratio of at most 1.05.

    OPENBLAS_NUM_THREADS=1 python -m benchmarks.bench_graph [--rounds 61] [--steps 20]

``python -m benchmarks --filter graph`` runs the graph step as a case of the suite
(``graph_chain_mlp_sgd``), next to numpy, PyTorch and scikit-learn doing the same math.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from benchmarks import mlp  # noqa: E402

SIZES, BATCH = (784, 256, 128, 10), 128


def graph_step(sizes=SIZES, batch=BATCH, optimizer="sgd"):
    """mlp.nnframe_step with the layers wired as a graph model instead of a Sequential."""
    import nnframe as nf

    x_in = nf.Input((sizes[0],), name="x")
    h = x_in
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        h = nf.Dense(d_in, d_out, rng=i)(h)
        if i < len(sizes) - 2:
            h = nf.ReLU()(h)
    model = nf.Model(x_in, h)
    names = [n for n, _ in model.named_parameters()]
    model.load_state_dict(dict(zip(names, mlp.init_weights(sizes))))
    model.needs_input_grad = False
    x, y = mlp.make_data(sizes, batch)
    nxt = mlp.cycle(mlp.POOL)
    loss_fn = nf.CrossEntropyLoss()
    if optimizer == "sgd":
        opt = nf.optim.SGD(model.parameters(), lr=mlp.LR, momentum=mlp.MOMENTUM)
    else:
        opt = nf.optim.Adam(model.parameters(), lr=mlp.ADAM_LR, clip_norm=mlp.CLIP)

    def step():
        i = nxt()
        opt.zero_grad()
        loss_fn(model(x[i]), y[i])
        model.backward(loss_fn.backward())
        opt.step()

    return step


def cases() -> dict:
    """name -> (builder(impl) -> step or None, flops per step), as benchmarks/run.py: nnframe
    runs the graph model; the references run the same math as mlp.py's cases."""

    def build(impl):
        if impl == "nnframe":
            return graph_step()
        return mlp.IMPLEMENTATIONS[impl](SIZES, BATCH, "sgd")

    return {"graph_chain_mlp_sgd": (build, mlp.training_flops(SIZES, BATCH))}


def _time(step, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def run(rounds: int = 61, steps: int = 20) -> dict:
    """Interleaved rounds of ``steps`` steps each; medians of the times and of the ratios."""
    seq, graph = mlp.nnframe_step(SIZES, BATCH, "sgd"), graph_step()
    for _ in range(10):  # warm up: lazy state, caches, first-touch allocations
        seq(), graph()
    ts, tg, ratios = [], [], []
    for r in range(rounds):
        if r % 2:
            g, s = _time(graph, steps), _time(seq, steps)
        else:
            s, g = _time(seq, steps), _time(graph, steps)
        ts.append(s)
        tg.append(g)
        ratios.append(g / s)
    return {
        "sequential_ms": 1e3 * statistics.median(ts),
        "graph_ms": 1e3 * statistics.median(tg),
        "ratio": statistics.median(ratios),
        "ratio_of_medians": statistics.median(tg) / statistics.median(ts),
        "rounds": rounds,
        "steps": steps,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=61)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    r = run(args.rounds, args.steps)
    print(
        f"MLP {'-'.join(map(str, SIZES))}, batch {BATCH}, "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}: Sequential "
        f"{r['sequential_ms']:.3f} ms/step, graph Model {r['graph_ms']:.3f} ms/step (medians of "
        f"{r['rounds']} interleaved rounds of {r['steps']} steps); ratio {r['ratio']:.3f} "
        f"(median of per-round ratios; ratio of medians {r['ratio_of_medians']:.3f})"
    )


if __name__ == "__main__":
    main()
