"""Graph-model scenarios under ``mpiexec -n K python -m mpi4py tests/mpi_graph_worker.py
SCENARIO OUTDIR`` (tests/test_graph_distributed.py). Each rank writes
``OUTDIR/<scenario>_<rank>.json``."""

import json
import pathlib
import sys

import numpy as np

import nnframe as nf
from nnframe.training.distributed import MPICommunicator


def two_input_model():
    """Two inputs (one of them token ids), a shared layer, a skip concatenation, two outputs."""
    xa = nf.Input((4,), dtype=np.float64, name="a")
    ids = nf.Input((), dtype=np.int64, name="item")
    e = nf.Embedding(6, 3, rng=0)(ids)
    shared = nf.Dense(4, 4, rng=1)
    h = nf.Tanh()(nf.Add()(shared(xa), shared(nf.Tanh()(xa))))
    both = nf.Concatenate()(h, e, xa)
    outputs = {"kind": nf.Dense(11, 3, rng=2)(both), "value": nf.Dense(11, 1, rng=3)(both)}
    return nf.Model({"a": xa, "item": ids}, outputs).to(np.float64)


def data(n, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, 4))
    item = rng.integers(0, 6, size=n)
    kind = ((a[:, 0] + (item % 3)) > 1).astype(np.int64) + (a[:, 1] > 0.5)
    value = (a[:, 2] - 0.3 * item)[:, None]
    return {"a": a, "item": item}, {"kind": kind, "value": value}


def trainer(comm):
    model = two_input_model()
    return nf.Trainer(
        model, {"kind": nf.CrossEntropyLoss(), "value": nf.MSELoss()},
        nf.optim.Adam(model.parameters(), lr=0.05),
        metrics={"kind": ["accuracy"], "value": ["rmse"]}, loss_weights={"value": 0.5}, comm=comm,
    )  # fmt: skip


def params_of(model):
    return np.concatenate([p.data.ravel() for p in model.parameters()])


def graph_fit_parity(comm, per_rank=4):
    """K ranks with a per-rank batch B against one process with batch K*B, same generator."""
    x, y = data(48, seed=1)
    val = data(20, seed=2)
    kwargs = dict(epochs=3, validation_data=val, clip_norm=1.0, verbose=0, rng=5)
    dist = trainer(comm)
    history = dist.fit(x, y, batch_size=per_rank, **kwargs)
    ref = trainer(None)
    ref_history = ref.fit(x, y, batch_size=per_rank * comm.size, **kwargs)
    diffs = {
        k: float(np.max(np.abs(np.subtract(history[k], ref_history[k]))))
        for k in ref_history.keys()
        if k != "time"
    }
    ev, ref_ev = dist.evaluate(*val, batch_size=3), ref.evaluate(*val)
    everyone = comm.allgather(params_of(dist.model).tolist())
    return {
        "param_diff": float(np.max(np.abs(params_of(dist.model) - params_of(ref.model)))),
        "param_change": float(np.max(np.abs(params_of(ref.model) - params_of(two_input_model())))),
        "history_diffs": diffs,
        "evaluate_diff": max(abs(ev[k] - ref_ev[k]) for k in ref_ev),
        "same_on_all_ranks": all(e == everyone[0] for e in everyone),
        "keys": sorted(history.keys()),
    }


def main():
    scenario, outdir = sys.argv[1], pathlib.Path(sys.argv[2])
    comm = MPICommunicator()
    result = globals()[scenario](comm)
    result.update(rank=comm.rank, size=comm.size)
    (outdir / f"{scenario}_{comm.rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
