"""Checkpoints: every state round-trips, resuming in a new process is bit-identical, and a
kill, a full disk, an exception or a read-only directory never costs the last good file."""

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest

import nnframe as nf
from nnframe.io.serialization import load_file

CHECKED_MODULES = []

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PINNED = {
    **os.environ,
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONPATH": ROOT,
}


def mlp(seed=0, width=5):
    return nf.Sequential(nf.Dense(3, width, rng=seed), nf.Tanh(), nf.Dense(width, 2, rng=seed + 1))


def run_python(code: str, *args, timeout=120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        env=PINNED,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def train_steps(model, opt, n, rng):
    for _ in range(n):
        x = rng.normal(size=(4, 3)).astype(np.float32)
        model.zero_grad()
        out = model(x)
        loss = nf.MSELoss()
        loss(out, np.zeros_like(out))
        model.backward(loss.backward())
        opt.step()


# ---------------------------------------------------------------------- round trip
def test_checkpoint_round_trips_every_state(tmp_path):
    model = mlp()
    opt = nf.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_steps(model, opt, 3, np.random.default_rng(0))
    nf.manual_seed(42)
    nf.default_rng().normal(size=5)
    extra = {
        "best": np.float32(0.25),
        "history": [1.0, float("nan"), float("inf")],
        3: ("a", None, True),
        "__odd": np.arange(4),
        "nested": {"deep": [{"x": np.int64(7)}]},
    }
    path = tmp_path / "ckpt.safetensors"
    nf.save_checkpoint(path, model, opt, epoch=2, step=30, loader={"position": 17}, extra=extra)
    expected_draw = nf.default_rng().normal(size=3)

    model2 = mlp(9)
    opt2 = nf.optim.SGD(model2.parameters(), lr=0.5, momentum=0.9)
    nf.manual_seed(0)
    ck = nf.load_checkpoint(path, model2, opt2)
    np.testing.assert_array_equal(nf.default_rng().normal(size=3), expected_draw)
    assert (ck.epoch, ck.step, ck.loader_state) == (2, 30, {"position": 17})
    assert ck.model is model2
    for (k, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert np.array_equal(a, b), k
    assert opt2.param_groups[0]["lr"] == 0.1
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["state"].keys() == s2["state"].keys()
    for i in s1["state"]:
        for key, v in s1["state"][i].items():
            np.testing.assert_array_equal(s2["state"][i][key], v)
    got = ck.extra
    assert type(got["best"]) is np.float32 and got["best"] == np.float32(0.25)
    assert got["history"][0] == 1.0 and np.isnan(got["history"][1]) and got["history"][2] == np.inf
    assert got[3] == ("a", None, True)
    np.testing.assert_array_equal(got["__odd"], np.arange(4))
    assert type(got["nested"]["deep"][0]["x"]) is np.int64

    # the same run continues identically from both
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    train_steps(model, opt, 2, rng_a)
    train_steps(model2, opt2, 2, rng_b)
    for (k, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert np.array_equal(a, b), k


def test_checkpoint_rebuilds_the_model_from_its_config(tmp_path):
    model = mlp(3)
    nf.save_checkpoint(tmp_path / "c.safetensors", model, step=4)
    ck = nf.load_checkpoint(tmp_path / "c.safetensors")
    assert repr(ck.model) == repr(model) and ck.step == 4
    x = np.ones((2, 3), dtype=np.float32)
    assert np.array_equal(ck.model(x), model(x))


def test_checkpoint_restores_layer_generators(tmp_path):
    class Noise(nf.Module):
        def __init__(self, seed):
            super().__init__()
            self.rng = np.random.default_rng(seed)

        def forward(self, x):
            return x + self.rng.normal(size=x.shape)

    model = nf.Sequential(Noise(1), nf.Dense(2, 2, rng=0))
    model[0].rng.normal(size=3)
    nf.save_checkpoint(tmp_path / "c.safetensors", model)
    expected = model[0].rng.normal(size=4)
    model[0].rng.normal(size=10)
    nf.load_checkpoint(tmp_path / "c.safetensors", model)
    np.testing.assert_array_equal(model[0].rng.normal(size=4), expected)


def test_checkpoint_refuses_unstorable_values(tmp_path):
    with pytest.raises(TypeError, match=r"extra.f: cannot store a function .*nothing is pickled"):
        nf.save_checkpoint(tmp_path / "c.safetensors", mlp(), extra={"f": lambda: 0})
    assert not os.listdir(tmp_path)


def test_load_checkpoint_of_a_model_file_is_a_clear_error(tmp_path):
    nf.save(mlp(), tmp_path / "m.safetensors")
    with pytest.raises(nf.ModelFormatError, match="expected a checkpoint file"):
        nf.load_checkpoint(tmp_path / "m.safetensors", mlp())


def test_malformed_checkpoint_state_is_a_model_format_error(tmp_path):
    from nnframe.io.serialization import save_file

    for state, message in [
        ("{", "not valid JSON"),
        ("[1]", "not a JSON object"),
        ('{"extra": {"__tensor__": 5}}', "missing tensor 5"),
        ('{"extra": {"__evil__": "os.system"}}', "unknown tag '__evil__'"),
        ('{"step": "3"}', "expected an integer step"),
        ('{"rng": {"default": {"bit_generator": "MT19937", "state": 1}}}', "invalid random"),
        ('{"extra": ' + "[" * 200 + "]" * 200 + "}", "nested too deeply"),
    ]:
        path = tmp_path / "c.safetensors"
        save_file({}, path, {"nnframe.kind": "checkpoint", "nnframe.checkpoint": state})
        with pytest.raises(nf.ModelFormatError, match=message):
            nf.load_checkpoint(path)


# ---------------------------------------------------------------------- bit-identical resume
RESUME_SCRIPT = """
import sys
import numpy as np
import nnframe as nf


def run(mode, total, ckpt, out):
    nf.manual_seed(0)
    model = nf.Sequential(nf.Dense(6, 32), nf.Tanh(), nf.Dense(32, 32), nf.Tanh(), nf.Dense(32, 3))
    opt = nf.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    loss_fn = nf.CrossEntropyLoss()
    data = np.random.default_rng(1)
    X = data.normal(size=(96, 6)).astype(np.float32)
    Y = data.integers(0, 3, size=96)
    order = np.random.default_rng(2)  # the seeded batch order
    batch, per_epoch = 16, 96 // 16
    perm, start = None, 0
    if mode == "resume":
        ck = nf.load_checkpoint(ckpt, model, opt)
        order.bit_generator.state = ck.loader_state["order_rng"]
        perm, start = ck.loader_state["perm"], ck.step
    stop = total // 2 if mode == "half" else total
    for step in range(start, stop):
        if step % per_epoch == 0:
            perm = order.permutation(96)
        idx = perm[(step % per_epoch) * batch : (step % per_epoch + 1) * batch]
        # noise from nnframe's default generator: its state must survive the restart too
        xb = X[idx] + 0.1 * nf.default_rng().normal(size=(batch, 6)).astype(np.float32)
        model.zero_grad()
        loss_fn(model(xb), Y[idx])
        model.backward(loss_fn.backward())
        opt.step()
    if mode == "half":
        loader = {"order_rng": order.bit_generator.state, "perm": perm}
        nf.save_checkpoint(ckpt, model, opt, epoch=stop // per_epoch, step=stop, loader=loader)
    else:
        nf.save_checkpoint(out, model, opt, step=stop)


total, ckpt, out = int(sys.argv[2]), sys.argv[3], sys.argv[4]
if sys.argv[1] == "straight_then_half":  # two independent runs in this process
    run("straight", total, ckpt, out)
    run("half", total, ckpt, out)
else:  # a new process resumes from the half-way checkpoint
    run("resume", total, ckpt, out)
"""


def test_resume_in_a_new_process_is_bit_identical(tmp_path):
    total = 20
    ckpt, straight, resumed = (tmp_path / n for n in ("half.st", "straight.st", "resumed.st"))
    for args in [("straight_then_half", total, ckpt, straight), ("resume", total, ckpt, resumed)]:
        result = run_python(RESUME_SCRIPT, *args)
        assert result.returncode == 0, result.stderr
    a, meta_a = load_file(straight)
    b, meta_b = load_file(resumed)
    assert a.keys() == b.keys()
    for k in a:  # parameters and optimizer buffers, bit for bit
        assert a[k].tobytes() == b[k].tobytes(), k
    state_a = json.loads(meta_a["nnframe.checkpoint"])
    state_b = json.loads(meta_b["nnframe.checkpoint"])
    assert state_a["rng"] == state_b["rng"] and state_a["step"] == state_b["step"] == total
    # and the half-way checkpoint really differs from the end (the test is not vacuous)
    half, _ = load_file(ckpt)
    assert not np.array_equal(half["model/0.weight"], a["model/0.weight"])


# ---------------------------------------------------------------------- faults during saves
SAVE_LOOP = """
import sys
import nnframe as nf

directory = sys.argv[1]
model = nf.Sequential(nf.Dense(200, 200, rng=0), nf.Tanh(), nf.Dense(200, 200, rng=1))
opt = nf.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
step = 0
while True:
    model[0].bias.data[0] = step  # each checkpoint is told apart by its content
    nf.save_checkpoint(directory + "/last.safetensors", model, opt, step=step)
    print(step, flush=True)
    step += 1
"""


@pytest.mark.parametrize("delay", [0.0, 0.007])
def test_kill_9_during_save_loop_keeps_the_newest_complete_checkpoint(delay, tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", SAVE_LOOP, str(tmp_path)],
        env=PINNED,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        done = [int(child.stdout.readline()) for _ in range(3)]
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    latest = nf.latest_checkpoint(tmp_path)
    assert latest == str(tmp_path / "last.safetensors")
    ck = nf.load_checkpoint(latest, mlp_like_loop())
    assert ck.step >= done[-1]
    assert ck.model[0].bias.data[0] == ck.step
    # any leftover temporary file is a hidden .tmp, never mistaken for a checkpoint
    for name in os.listdir(tmp_path):
        assert name == "last.safetensors" or (name.startswith(".") and name.endswith(".tmp"))


def mlp_like_loop():
    return nf.Sequential(nf.Dense(200, 200, rng=0), nf.Tanh(), nf.Dense(200, 200, rng=1))


FULL_DISK = """
import errno, resource, signal, sys
import nnframe as nf

path = sys.argv[1]
nf.save_weights(nf.Dense(2, 2, rng=0), path)  # the previous, good file (small)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
try:
    nf.save_weights(nf.Dense(100, 100, rng=1), path)  # 40 KB: the 'disk' fills up
except OSError as e:
    assert e.errno == errno.EFBIG, e
    print(e)
    sys.exit(0)
sys.exit(3)
"""


def test_full_disk_leaves_the_previous_file_intact(tmp_path):
    path = tmp_path / "w.safetensors"
    result = run_python(FULL_DISK, path)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "file size limit" in result.stdout and "previous file is intact" in result.stdout
    assert os.listdir(tmp_path) == ["w.safetensors"]  # the temporary file was removed
    layer = nf.load_weights(nf.Dense(2, 2, rng=5), path)
    np.testing.assert_array_equal(layer.weight.data, nf.Dense(2, 2, rng=0).weight.data)


def test_exception_or_interrupt_during_save_leaves_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    nf.save(mlp(0), path)
    before = path.read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="no space left on the device; any previous file is intact"):
        nf.save(mlp(1), path)
    monkeypatch.undo()

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        nf.save_checkpoint(path, mlp(2))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.safetensors"]
    assert repr(nf.load(path)) == repr(mlp(0))


READ_ONLY = """
import os, sys
import nnframe as nf
if os.geteuid() == 0:  # root writes anywhere: drop to an unprivileged user, imports done
    os.setgid(65534)
    os.setuid(65534)
try:
    nf.save(nf.Dense(2, 2, rng=0), sys.argv[1] + "/m.safetensors")
except PermissionError as e:
    print(e)
    sys.exit(0)
sys.exit(3)
"""


def test_read_only_directory_is_a_clear_error():
    directory = tempfile.mkdtemp(prefix="nnframe-ro-")
    try:
        os.chmod(directory, 0o555)
        result = run_python(READ_ONLY, directory)
        assert result.returncode == 0, result.stderr + result.stdout
        assert "permission denied" in result.stdout and "read-only" in result.stdout
        assert os.listdir(directory) == []
    finally:
        os.chmod(directory, 0o755)
        os.rmdir(directory)


def test_directory_path_given_to_save(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory; give a file path"):
        nf.save(mlp(), tmp_path)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        nf.save_weights(mlp(), tmp_path / "missing" / "w.safetensors")


def test_latest_checkpoint_skips_corrupt_and_temporary_files(tmp_path):
    assert nf.latest_checkpoint(tmp_path) is None
    nf.save_checkpoint(tmp_path / "a.safetensors", mlp(), step=1)
    time.sleep(0.01)
    nf.save_checkpoint(tmp_path / "b.safetensors", mlp(), step=2)
    raw = bytearray((tmp_path / "b.safetensors").read_bytes())
    raw[-1] ^= 1
    time.sleep(0.01)
    (tmp_path / "c.safetensors").write_bytes(bytes(raw))  # newest, but corrupt
    (tmp_path / ".d.safetensors.0123.tmp").write_bytes(b"half")
    nf.save_weights(mlp(), tmp_path / "weights_only.safetensors")
    os.utime(tmp_path / "weights_only.safetensors", (0, 0))
    assert nf.latest_checkpoint(tmp_path) == str(tmp_path / "b.safetensors")


# ---------------------------------------------------------------------- Trainer.fit resume
FIT_SCRIPT = """
import sys
import numpy as np
import nnframe as nf


def run(mode, ckpt, out):
    nf.manual_seed(0)
    model = nf.Sequential(nf.Dense(5, 16), nf.ReLU(), nf.Dropout(0.2), nf.Dense(16, 3))
    opt = nf.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = nf.optim.StepLR(opt, step_size=1, gamma=0.7)
    data = np.random.default_rng(1)
    X = data.normal(size=(120, 5)).astype(np.float32)
    Y = data.integers(0, 3, size=120)
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), opt, metrics=["accuracy"])
    callbacks = [
        nf.callbacks.LearningRateScheduler(sched),
        nf.callbacks.EarlyStopping(monitor="val_loss", patience=50),
    ]
    kwargs = dict(batch_size=16, validation_split=0.25, rng=7, verbose=0, callbacks=callbacks)
    if mode == "straight":
        history = trainer.fit(X, Y, epochs=4, **kwargs)
    elif mode == "first_half":
        callbacks.append(nf.TrainingCheckpoint(ckpt, every=2))
        trainer.fit(X, Y, epochs=2, **kwargs)
        return
    else:
        history = trainer.fit(X, Y, epochs=4, resume_from=ckpt, **kwargs)
    extra = {
        "loss": history["loss"],
        "val_loss": history["val_loss"],
        "best": callbacks[1].best,
        "lr": opt.param_groups[0]["lr"],
    }
    nf.save_checkpoint(out, model, opt, extra=extra)


ckpt, out = sys.argv[2], sys.argv[3]
if sys.argv[1] == "straight_then_first_half":
    run("straight", ckpt, out)
    run("first_half", ckpt, out)
else:
    run("resume", ckpt, out)
"""


def test_fit_resumes_bit_identically_in_a_new_process(tmp_path):
    ckpt, straight, resumed = (tmp_path / n for n in ("ckpt.st", "straight.st", "resumed.st"))
    for args in [("straight_then_first_half", ckpt, straight), ("resume", ckpt, resumed)]:
        result = run_python(FIT_SCRIPT, *args)
        assert result.returncode == 0, result.stderr
    a = nf.load_checkpoint(straight, restore_rng=False)
    b = nf.load_checkpoint(resumed, restore_rng=False)
    for k in a.model_state:
        assert a.model_state[k].tobytes() == b.model_state[k].tobytes(), k
    assert a.extra == b.extra  # the history of all 4 epochs, EarlyStopping's best, the lr
    assert len(b.extra["loss"]) == 4
    assert a.rng_state == b.rng_state


# ---------------------------------------------------------------------- every optimizer
def optimizer_classes():
    return sorted(
        name
        for name in dir(nf.optim)
        if isinstance(getattr(nf.optim, name), type)
        and issubclass(getattr(nf.optim, name), nf.optim.Optimizer)
        and getattr(nf.optim, name) is not nf.optim.Optimizer
    )


@pytest.mark.parametrize("name", optimizer_classes())
def test_every_optimizer_and_a_scheduler_resume_exactly(name, tmp_path):
    def build():
        model = mlp(0)
        opt = getattr(nf.optim, name)(model.parameters(), lr=0.01)
        return model, opt, nf.optim.StepLR(opt, step_size=2, gamma=0.5)

    def steps(model, opt, sched, n, seed):
        train_steps(model, opt, n, np.random.default_rng(seed))
        for _ in range(n):
            sched.step()

    model, opt, sched = build()
    steps(model, opt, sched, 3, 0)
    nf.save_checkpoint(tmp_path / "c.safetensors", model, opt, sched, step=3)
    steps(model, opt, sched, 2, 1)

    model2, opt2, sched2 = build()
    nf.load_checkpoint(tmp_path / "c.safetensors", model2, opt2, sched2)
    assert sched2.state_dict() == nf.load_checkpoint(tmp_path / "c.safetensors").scheduler_state
    steps(model2, opt2, sched2, 2, 1)
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert a.tobytes() == b.tobytes(), k
    assert opt.param_groups[0]["lr"] == opt2.param_groups[0]["lr"]


def test_load_and_load_weights_read_the_model_of_a_checkpoint(tmp_path):
    model = mlp(4)
    nf.save_checkpoint(tmp_path / "c.safetensors", model, nf.optim.SGD(model.parameters()))
    x = np.ones((2, 3), dtype=np.float32)
    assert np.array_equal(nf.load(tmp_path / "c.safetensors")(x), model(x))
    assert np.array_equal(nf.load_weights(mlp(0), tmp_path / "c.safetensors")(x), model(x))


def test_same_seed_same_parameters_bit_for_bit():
    def run():
        nf.manual_seed(123)
        model = nf.Sequential(nf.Dense(4, 8), nf.ReLU(), nf.Dropout(0.3), nf.Dense(8, 2))
        trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.Adam(model.parameters()))
        x = nf.default_rng().normal(size=(40, 4)).astype(np.float32)
        trainer.fit(x, (x[:, 0] > 0).astype(np.int64), epochs=2, batch_size=8, verbose=0)
        return [p.data.tobytes() for p in model.parameters()]

    assert run() == run()


def test_replacing_a_file_keeps_its_permissions(tmp_path):
    path = tmp_path / "private.safetensors"
    nf.save_checkpoint(path, mlp())
    os.chmod(path, 0o600)
    nf.save_checkpoint(path, mlp(1))
    assert (os.stat(path).st_mode & 0o777) == 0o600


# ---------------------------------------------------------------------- issue 15: callback state
class _Crafted:
    """Stands for a hostile file: its 'state' is whatever the attacker wrote."""

    def __init__(self, state):
        self.state = state

    def state_dict(self):
        return self.state


def _fit_parts(tmp_path):
    rng = np.random.default_rng(0)
    model = mlp(0)
    x = rng.normal(size=(16, model[0].in_features)).astype(np.float32)
    y = rng.integers(0, model[-1].out_features, size=16)
    opt = nf.optim.SGD(model.parameters(), lr=0.1)
    return model, opt, x, y


@pytest.mark.parametrize(
    "state",
    [
        {"state_dict": {"path": "VICTIM"}},
        {"state_dict": {"on_epoch_end": "x"}},
        {"state_dict": {"best": "not a number"}},
        {"state_dict": {"best": 1.0, "__class__": "x"}},
        {"state_dict": 5},
        {"evil": 1},
    ],
)
def test_a_crafted_callback_state_is_refused_and_changes_nothing(tmp_path, state):
    # issue 15 defect 2: restoring used setattr with names from the file
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    model, opt, x, y = _fit_parts(tmp_path)
    ckpt = tmp_path / "c.safetensors"
    if isinstance(state.get("state_dict"), dict):
        inner = {k: (str(victim) if v == "VICTIM" else v) for k, v in state["state_dict"].items()}
        state = {"state_dict": inner}
    nf.training.checkpoint.save_checkpoint(ckpt, mlp(1), epoch=1, callbacks=[_Crafted(state)])
    cb = nf.callbacks.ModelCheckpoint(tmp_path / "m.safetensors", monitor="loss")
    before = model.state_dict()
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), opt)
    with pytest.raises(nf.io.schema.SchemaError, match="ModelCheckpoint.load_state_dict"):
        trainer.fit(x, y, epochs=2, verbose=0, callbacks=[cb], resume_from=ckpt)
    assert victim.read_text() == "precious"
    assert cb.path == str(tmp_path / "m.safetensors") and callable(cb.on_epoch_end)
    for k, v in model.state_dict().items():  # all-or-nothing: the weights were not loaded
        assert v.tobytes() == before[k].tobytes()


def test_a_legacy_callback_state_restores_only_declared_fields(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    model, opt, x, y = _fit_parts(tmp_path)
    ckpt = tmp_path / "c.safetensors"
    legacy = {"attrs": {"path": str(victim), "on_epoch_end": "x", "best": 0.5}, "objects": {}}
    monkeypatch.setattr(nf.training.checkpoint, "callback_state", lambda cb: legacy)
    nf.training.checkpoint.save_checkpoint(ckpt, model, opt, epoch=1, callbacks=[object()])
    monkeypatch.undo()
    cb = nf.callbacks.ModelCheckpoint(tmp_path / "m.safetensors", monitor="loss")
    nf.Trainer(model, nf.CrossEntropyLoss(), opt).fit(
        x, y, epochs=2, verbose=0, callbacks=[cb], resume_from=ckpt
    )
    assert victim.read_text() == "precious"
    assert cb.path == str(tmp_path / "m.safetensors")
    assert (tmp_path / "m.safetensors").exists()
    assert cb.best <= 0.5  # the declared field was restored


def test_callback_state_round_trips_only_declared_fields():
    es = nf.callbacks.EarlyStopping(monitor="loss")
    es.on_train_begin({})
    es.best, es.wait = 0.25, 3
    es.secret = "not state"
    state = es.state_dict()
    assert set(state) == set(nf.callbacks.EarlyStopping.state_fields)
    other = nf.callbacks.EarlyStopping(monitor="loss")
    other.load_state_dict(state)
    assert other.best == 0.25 and other.wait == 3 and not hasattr(other, "secret")
    with pytest.raises(nf.io.schema.SchemaError, match=r"EarlyStopping.load_state_dict: wait"):
        other.load_state_dict({"wait": -1, "best": 9.0})
    assert other.best == 0.25  # all or nothing
