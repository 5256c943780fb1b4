"""Scenarios run under ``mpiexec -n K python -m mpi4py tests/mpi_worker.py SCENARIO OUTDIR``.

Each rank writes ``OUTDIR/<scenario>_<rank>.json``; tests/test_distributed.py reads them.
"""

import json
import pathlib
import sys

import numpy as np

import nnframe as nf
from nnframe.training.callbacks import CSVLogger, EarlyStopping, LambdaCallback, ModelCheckpoint
from nnframe.training.distributed import DataParallel, DistributedSampler, MPICommunicator


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


# ---------------------------------------------------------------- Trainer.fit, data-parallel
def trainer(comm, metrics=("accuracy", "f1_score")):
    model = mlp(0)
    opt = nf.optim.Adam(model.parameters(), lr=0.05)
    return nf.Trainer(model, nf.CrossEntropyLoss(), opt, metrics=list(metrics), comm=comm)


def history_of(history):
    return {"epoch": history.epoch, "logs": history.history, "stop_reason": history.stop_reason}


def fit_parity(comm, per_rank=4):
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
    everyone = comm.allgather((params_of(dist.model).tolist(), history_of(history)))
    # BatchNorm first: each rank normalizes its own shard, so only the running mean (linear
    # in the batch means) matches one process; every buffer is averaged, equal on all ranks
    norms = []
    for c, batch_size in ((comm, per_rank), (None, per_rank * comm.size)):
        model = nf.Sequential(nf.BatchNorm1d(4), nf.Dense(4, 3, rng=0)).to(np.float64)
        opt = nf.optim.SGD(model.parameters(), lr=0.1)
        t = nf.Trainer(model, nf.CrossEntropyLoss(), opt, comm=c)
        t.fit(x, y, epochs=2, batch_size=batch_size, verbose=0, rng=5)
        norms.append(dict(model.named_buffers()))
    buffers = comm.allgather({k: v.tolist() for k, v in norms[0].items()})
    return {
        "running_mean_diff": float(
            np.max(np.abs(norms[0]["0.running_mean"] - norms[1]["0.running_mean"]))
        ),
        "buffers_same_on_all_ranks": all(b == buffers[0] for b in buffers),
        "param_diff": float(np.max(np.abs(params_of(dist.model) - params_of(ref.model)))),
        "history_diffs": diffs,
        "evaluate_diff": max(abs(ev[k] - ref_ev[k]) for k in ref_ev),
        "same_on_all_ranks": all(e == everyone[0] for e in everyone),
        "keys": sorted(history.keys()),
    }


def fit_files(comm, outdir):
    """Writers on every rank, each into its own folder: only rank 0's folder gets files.
    EarlyStopping on averaged validation metrics stops every rank at the same epoch, the one
    where a single process with the global batch stops."""
    mine = outdir / f"rank{comm.rank}"
    mine.mkdir()
    x, y = data(32, seed=3)
    val = data(16, seed=4)

    def callbacks():
        return [EarlyStopping(monitor="val_loss", patience=2, min_delta=0.01)]

    writers = [
        ModelCheckpoint(mine / "best.npz", save_best_only=True),
        CSVLogger(mine / "log.csv"),
        nf.TrainingCheckpoint(mine / "ckpt-{epoch}.safetensors", every=2),
    ]
    dist = trainer(comm, metrics=["accuracy"])
    kwargs = dict(epochs=30, validation_data=val, verbose=2, shuffle=False)
    early = callbacks()
    history = dist.fit(x, y, batch_size=4, callbacks=early + writers, **kwargs)
    ref_early = callbacks()
    if comm.rank == 0:
        kwargs["verbose"] = 0
        ref_history = trainer(None, ["accuracy"]).fit(
            x, y, batch_size=4 * comm.size, callbacks=ref_early, **kwargs
        )
    comm.barrier()
    everyone = comm.allgather(
        (
            history_of(history),
            early[0].stopped_epoch,
            writers[0].best,
            pathlib.Path(writers[0].last_saved).name,
            writers[2].last_saved is not None,
        )
    )
    return {
        "files": sorted(p.name for p in mine.iterdir()),
        "epochs": len(history),
        "stopped_epoch": early[0].stopped_epoch,
        "ref_stopped_epoch": ref_early[0].stopped_epoch if comm.rank == 0 else None,
        "ref_epochs": len(ref_history) if comm.rank == 0 else None,
        "same_on_all_ranks": all(e == everyone[0] for e in everyone),
    }


def fit_resume(comm, outdir):
    """Interrupted after 2 epochs (rank 0 writes the checkpoint, every rank reads it) and
    resumed: the same parameters as 4 uninterrupted epochs, shuffled rows included."""
    x, y = data(32, seed=6)
    path = outdir / "ckpt.safetensors"
    kwargs = dict(batch_size=4, verbose=0)
    whole = trainer(comm)
    whole.fit(x, y, epochs=4, rng=9, **kwargs)
    trainer(comm).fit(x, y, epochs=2, rng=9, callbacks=[nf.TrainingCheckpoint(path)], **kwargs)
    comm.barrier()
    resumed = trainer(comm)
    history = resumed.fit(x, y, epochs=4, rng=9, resume_from=path, **kwargs)
    return {
        "param_diff": float(np.max(np.abs(params_of(resumed.model) - params_of(whole.model)))),
        "epochs": history.epoch,
    }


def fit_agree(comm):
    """Stop and NaN decisions taken on one rank's data reach every rank at the same batch."""
    x, y = data(32, seed=5)
    x[5] = np.nan  # row 5: rank 1's first batch of every epoch when rows are not shuffled
    out = {}
    t = trainer(comm)
    h = t.fit(x, y, epochs=2, batch_size=4, shuffle=False, nan_policy="skip_batch", verbose=0)
    out["skip"] = {"skipped": h["skipped_batches"][-1], "params": params_of(t.model).tolist()}
    t = trainer(comm)
    h = t.fit(x, y, epochs=2, batch_size=4, shuffle=False, nan_policy="stop", verbose=0)
    out["stop"] = {"epochs": len(h), "reason": h.stop_reason}
    try:
        trainer(comm).fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
        out["raise"] = None
    except FloatingPointError as error:
        out["raise"] = str(error)
    x[5] = 0.0
    t = trainer(comm)
    batches = []

    def on_batch_end(batch, logs):
        batches.append(batch)
        if comm.rank == 1 and batch == 2:  # one rank alone asks to stop
            t.stop_training, t.stop_reason = True, "rank 1 had enough"

    cb = LambdaCallback(on_batch_end=on_batch_end)
    h = t.fit(x, y, epochs=3, batch_size=4, shuffle=False, callbacks=[cb], verbose=0)
    out["callback"] = {
        "batches": batches,
        "epochs": len(h),
        "reason": h.stop_reason,
        "params": params_of(t.model).tolist(),
    }
    try:  # rank 1 holds fewer rows: it would take fewer steps; fit refuses on every rank
        trainer(comm).fit(x[: 32 - 2 * comm.rank], y[: 32 - 2 * comm.rank], verbose=0)
        out["lengths"] = None
    except ValueError as error:
        out["lengths"] = str(error)
    everyone = comm.allgather(out)
    out["same_on_all_ranks"] = all(e == everyone[0] for e in everyone)
    return out


def fit_poisoned_buffers(comm):
    """Issue 15: one rank's batch overflows BatchNorm's variance (finite loss): every rank
    rejects that global batch, and the running statistics stay finite and equal."""
    x, y = data(32, seed=5)
    x[5, 0] = 1e300 if comm.rank == 1 else x[5, 0]  # float64 model: the variance overflows
    model = nf.Sequential(
        nf.Dense(4, 6, rng=0), nf.BatchNorm1d(6), nf.Tanh(), nf.Dense(6, 3, rng=1)
    )
    model.to(np.float64)
    t = nf.Trainer(
        model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1), comm=comm
    )
    h = t.fit(x, y, epochs=2, batch_size=4, shuffle=False, nan_policy="skip_batch", verbose=0)
    buffers = np.concatenate([model[1].running_mean, model[1].running_var])
    out = {
        "skipped": h["skipped_batches"][-1],
        "finite": bool(np.isfinite(buffers).all() and np.isfinite(params_of(model)).all()),
        "state": np.concatenate([params_of(model), buffers]).tolist(),
    }
    # a step that would overflow is undone on every rank alike
    dp_model = mlp(0)
    dp = DataParallel(dp_model, nf.optim.SGD(dp_model.parameters(), lr=1e308), comm)
    before = params_of(dp_model)
    for p in dp_model.parameters():
        p.grad[...] = 100.0 + comm.rank  # lr * grad overflows float64
    out["dp_step"] = dp.step()
    out["dp_unchanged"] = bool((params_of(dp_model) == before).all())
    everyone = comm.allgather(out)
    out["same_on_all_ranks"] = all(e == everyone[0] for e in everyone)
    return out


def main():
    scenario, outdir = sys.argv[1], pathlib.Path(sys.argv[2])
    comm = MPICommunicator()
    if scenario in ("root_writes", "fit_files", "fit_resume"):
        result = globals()[scenario](comm, outdir)
    else:
        result = globals()[scenario](comm)
    result.update(rank=comm.rank, size=comm.size)
    (outdir / f"{scenario}_{comm.rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
