"""The main job: ``python -m nnframe.demo`` trains a small CNN on real handwritten digits.

The 1,797 8x8 digits that ship with scikit-learn (no download) are split 80/20 into training and
test sets (stratified), standardized with the training statistics, and a small convolutional
network (an MLP if nnframe has no convolution layers) is trained with :class:`nnframe.Trainer`:
a progress bar, a stratified validation split, a warm-up + cosine learning-rate schedule and
early stopping that restores the best weights. It prints the layer summary, the test accuracy,
examples per second and the wall time, and writes the trained model (``nnframe.save``) and a PNG
of the training curves.

Usage::

    python -m nnframe.demo [--epochs 30] [--out nnframe-demo] [--model auto|cnn|mlp] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import nnframe as nf


def has_conv() -> bool:
    """Whether this nnframe has the layers of the CNN."""
    return all(hasattr(nf, name) for name in ("Conv2d", "MaxPool2d", "Flatten"))


def build_model(kind: str, rng: np.random.Generator) -> nf.Module:
    """The CNN: conv 3x3 (32 channels) -> ReLU -> 2x2 max-pool -> dense 64 -> ReLU -> dense 10.
    The MLP: 64 -> 256 -> ReLU -> 10."""
    if kind == "cnn":
        return nf.Sequential(
            nf.Conv2d(1, 32, 3, padding=1, rng=rng),  # (N, 32, 8, 8)
            nf.ReLU(),
            nf.MaxPool2d(2),  # (N, 32, 4, 4)
            nf.Flatten(),  # (N, 512)
            nf.Dense(32 * 4 * 4, 64, rng=rng),
            nf.ReLU(),
            nf.Dense(64, 10, rng=rng),
        )
    return nf.Sequential(
        nf.Dense(64, 256, rng=rng),
        nf.ReLU(),
        nf.Dense(256, 10, rng=rng),
    )


def prepare_data(kind: str, seed: int, subset: int | None = None):
    """Digits split 80/20 (stratified) and standardized with the training statistics."""
    x, y = nf.datasets.load_digits(as_images=kind == "cnn")
    if subset is not None:  # a quick run (tests): a stratified subset
        x, _, y, _ = nf.data.train_test_split(x, y, test_size=len(x) - subset, stratify=y, rng=seed)
    x_train, x_test, y_train, y_test = nf.data.train_test_split(
        x, y, test_size=0.2, stratify=y, rng=seed
    )
    axis = (0, 2, 3) if kind == "cnn" else 0  # per channel for images, per pixel for rows
    scaler = nf.data.Standardizer(axis=axis).fit(x_train)
    return scaler.transform(x_train), scaler.transform(x_test), y_train, y_test


def limit_blas_threads(threads: int):
    """Caps BLAS threads (a context manager), when threadpoolctl is installed: the demo's
    matrices are small, and idle BLAS threads spinning on a shared machine cost far more than
    they bring. Returns None (no limit) without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=threads, user_api="blas")


def save_model(model: nf.Module, out: str, kind: str) -> str:
    """Writes the whole model (architecture + weights) and checks that it loads back."""
    path = os.path.join(out, f"digits_{kind}.safetensors")
    nf.save(model, path)
    return path


def main(argv: list[str] | None = None, *, subset: int | None = None) -> dict:
    """Runs the demo; returns the figures it prints (accuracy, examples_per_s, wall_s, paths).

    ``subset`` trains on that many digits only (the test suite uses it to run quickly).
    """
    parser = argparse.ArgumentParser(
        prog="python -m nnframe.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--epochs", type=int, default=30, help="at most this many epochs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05, help="peak learning rate")
    parser.add_argument("--model", choices=["auto", "cnn", "mlp"], default="auto")
    parser.add_argument("--out", default="nnframe-demo", help="directory for the model and PNG")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    limits = limit_blas_threads(args.threads)
    try:
        return run(args, parser, subset)
    finally:
        if limits is not None:
            limits.restore_original_limits()


def run(args: argparse.Namespace, parser: argparse.ArgumentParser, subset: int | None) -> dict:
    """The demo proper (``main`` parses the arguments and limits the BLAS threads)."""

    wall_start = time.perf_counter()
    kind = args.model if args.model != "auto" else ("cnn" if has_conv() else "mlp")
    if kind == "cnn" and not has_conv():
        parser.error("--model cnn needs nnframe's Conv2d, MaxPool2d and Flatten")
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))

    nf.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x_train, x_test, y_train, y_test = prepare_data(kind, args.seed, subset)
    model = build_model(kind, rng)
    say(
        f"nnframe {nf.__version__} demo: {kind.upper()} on the 8x8 handwritten digits "
        f"(scikit-learn's copy of UCI optdigits): {len(x_train)} training / {len(x_test)} test"
    )
    say(nf.summary(model, x_train.shape[1:], batch_size=args.batch_size))

    optimizer = nf.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    warmup = min(3, max(1, args.epochs - 1))
    schedule = nf.optim.SequentialLR(
        optimizer,
        [
            nf.optim.LinearLR(optimizer, start_factor=0.1, total_iters=warmup),
            nf.optim.CosineAnnealingLR(optimizer, T_max=max(1, args.epochs - warmup)),
        ],
        milestones=[warmup],
    )
    os.makedirs(args.out, exist_ok=True)
    callbacks = [
        nf.callbacks.LearningRateScheduler(schedule),
        nf.callbacks.EarlyStopping("val_loss", patience=8, restore_best_weights=True),
    ]
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), optimizer, metrics=["accuracy"])
    verbose = 0 if args.quiet else (1 if sys.stderr.isatty() else 2)
    fit_start = time.perf_counter()
    history = trainer.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_split=0.1,
        stratify=True,
        callbacks=callbacks,
        verbose=verbose,
        rng=args.seed,
    )
    fit_s = time.perf_counter() - fit_start
    epochs_run = len(history)
    n_fit = len(trainer.split_indices[0])
    examples_per_s = n_fit * epochs_run / sum(history["time"])

    result = trainer.evaluate(x_test, y_test)
    pred = trainer.predict(x_test)
    accuracy = nf.metrics.accuracy(y_test, pred)
    f1 = nf.metrics.f1_score(y_test, pred)
    model_path = save_model(model, args.out, kind)
    reloaded = nf.load(model_path)
    same = np.array_equal(nf.Trainer(reloaded, trainer.loss, optimizer).predict(x_test), pred)
    curves = history.plot(os.path.join(args.out, "curves.png"))
    wall_s = time.perf_counter() - wall_start

    if history.stop_reason:
        say(f"stopped early: {history.stop_reason}")
    say(f"confusion matrix (rows: true digit, columns: predicted):\n"
        f"{nf.metrics.confusion_matrix(y_test, pred, num_classes=10)}")  # fmt: skip
    say(
        f"test accuracy {accuracy:.2%} (macro F1 {f1:.3f}, loss {result['loss']:.4f}) after "
        f"{epochs_run} epochs | {examples_per_s:,.0f} training examples/s | "
        f"fit {fit_s:.1f} s | wall {wall_s:.1f} s"
    )
    say(f"saved the model to {model_path} (reloads identically: {same}) and the curves to {curves}")
    return {
        "model": kind,
        "accuracy": accuracy,
        "f1": f1,
        "epochs": epochs_run,
        "examples_per_s": examples_per_s,
        "fit_s": fit_s,
        "wall_s": wall_s,
        "model_path": model_path,
        "curves_path": str(curves),
        "reloads_identically": same,
        "history": history,
    }


if __name__ == "__main__":
    main()
