"""Scenarios run under ``mpiexec -n K python -m mpi4py tests/mpi_worker.py SCENARIO OUTDIR``.

Each rank writes ``OUTDIR/<scenario>_<rank>.json``; tests/test_distributed.py reads them.
"""

import json
import pathlib
import sys

import numpy as np

import nnframe as nf
from nnframe.distributed import DataParallel, DistributedSampler, MPICommunicator


def mlp(rng, hidden=6):
    model = nf.Sequential(nf.Dense(4, hidden, rng=rng), nf.Tanh(), nf.Dense(hidden, 3, rng=rng))
    return model.to(np.float64)


def data(n=24, seed=7):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)), rng.integers(0, 3, size=n)


def grads_of(model, x, y):
    loss = nf.CrossEntropyLoss()
    model.zero_grad()
    loss(model(x), y)
    model.backward(loss.backward())
    return np.concatenate([p.grad.ravel() for p in model.parameters()])


def params_of(model):
    return np.concatenate([p.data.ravel() for p in model.parameters()])


def broadcast(comm):
    model = mlp(comm.rank + 100)  # every rank starts from different weights
    DataParallel(model, nf.optim.SGD(model.parameters(), lr=0.1), comm)
    everyone = comm.allgather(params_of(model).tolist())
    return {"identical": all(p == everyone[0] for p in everyone)}


def gradient(comm):
    model = mlp(0)
    dp = DataParallel(model, nf.optim.SGD(model.parameters(), lr=0.1), comm)
    x, y = data()
    full = grads_of(mlp(0), x, y)  # one process, the whole batch
    shard = DistributedSampler(len(x), comm, shuffle=False).indices()
    grads_of(model, x[shard], y[shard])
    dp.average_gradients()
    averaged = np.concatenate([p.grad.ravel() for p in model.parameters()])
    return {"max_diff": float(np.max(np.abs(averaged - full)))}


def train(comm, steps=6, batch=12):
    x, y = data(steps * batch)
    reference = mlp(0)
    ref_opt = nf.optim.Adam(reference.parameters(), lr=0.05) if hasattr(nf.optim, "Adam") else None
    ref_opt = ref_opt or nf.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    model = mlp(0)
    opt = type(ref_opt)(model.parameters(), **{k: v for k, v in ref_opt.defaults.items()})
    dp = DataParallel(model, opt, comm, clip_norm=1.0)
    ref_opt.clip_norm = 1.0
    for s in range(steps):
        xb, yb = x[s * batch : (s + 1) * batch], y[s * batch : (s + 1) * batch]
        grads_of(reference, xb, yb)
        ref_opt.step()
        shard = np.arange(batch)[comm.rank :: comm.size]
        grads_of(model, xb[shard], yb[shard])
        dp.step()
    return {"max_diff": float(np.max(np.abs(params_of(model) - params_of(reference))))}


def mismatch(comm):
    model = mlp(0, hidden=6 if comm.rank == 0 else 5)
    try:
        DataParallel(model, nf.optim.SGD(model.parameters(), lr=0.1), comm)
    except ValueError as error:
        return {"raised": str(error)}
    return {"raised": None}


def crash(comm):
    comm.barrier()
    if comm.rank == 1:
        raise RuntimeError("rank 1 fails on purpose")
    comm.allreduce_mean_(np.zeros(4))  # would wait forever for rank 1 without -m mpi4py
    return {"finished": True}


def uneven(comm):
    out = {}
    for drop_last in (False, True):
        sampler = DistributedSampler(10, comm, seed=3, drop_last=drop_last)
        sampler.set_epoch(1)
        idx = sampler.indices()
        out[f"drop_last={drop_last}"] = {
            "batches": len(list(sampler.batches(2))),
            "indices": idx.tolist(),
        }
    return out


def root_writes(comm, outdir):
    model = mlp(0)
    dp = DataParallel(model, nf.optim.SGD(model.parameters(), lr=0.1), comm)
    if dp.comm.is_root:  # the pattern the docs teach: only rank 0 writes
        np.savez(outdir / "weights.npz", **model.state_dict())
    comm.barrier()
    return {"files": sorted(p.name for p in outdir.iterdir() if p.suffix == ".npz")}


def main():
    scenario, outdir = sys.argv[1], pathlib.Path(sys.argv[2])
    comm = MPICommunicator()
    if scenario == "root_writes":
        result = root_writes(comm, outdir)
    else:
        result = globals()[scenario](comm)
    result.update(rank=comm.rank, size=comm.size)
    (outdir / f"{scenario}_{comm.rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
