"""Devices (nnframe.core.device): placement with ``to``, moving data, and everything that must
follow a model onto a GPU: optimizer state, Trainer batches and outputs, files.

CI has no GPU: the ``on_fake_device`` fixture makes the CPU stand-in of tests/standin.py the
``"cuda"`` device, so every path below runs as it would with CuPy (device arrays that refuse to
meet numpy arrays). tests/test_gpu.py runs the real thing where a GPU is present.
"""

import importlib.util

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnframe as nf
from nnframe.core import backend
from tests.standin import is_fake

CHECKED_MODULES: list = []  # placement tests, not gradient checks


def _model(seed=0):
    # no bias before the batch norm: its gradient is zero but for rounding, which Adam's
    # m / sqrt(v) would blow up to steps of lr / 10 that differ between CPU and GPU
    return nf.Sequential(
        nf.Dense(4, 8, bias=False, rng=seed),
        nf.BatchNorm1d(8),
        nf.ReLU(),
        nf.Dense(8, 3, rng=seed + 1),
    )


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    return x, y


def _arrays(model):
    out = [p.data for p in model.parameters()] + [p.grad for p in model.parameters()]
    return out + [b for _, b in model.named_buffers() if b is not None]


# ----------------------------------------------------------------------------- Device
@pytest.mark.parametrize(
    "spec, text",
    [("cpu", "cpu"), ("cuda", "cuda:0"), ("cuda:1", "cuda:1"), (("cuda", 2), "cuda:2")],
)
def test_device_parses_pytorchs_spellings(spec, text):
    device = nf.Device(*spec) if isinstance(spec, tuple) else nf.Device(spec)
    assert str(device) == text
    assert device == text and nf.Device(device) == device
    assert device != "gpu" and device != 3  # comparing with no device is False, not an error
    assert hash(device) == hash(nf.Device(text))


def test_device_reads_a_torch_device():
    torch = pytest.importorskip("torch")
    assert nf.Device(torch.device("cuda", 1)) == "cuda:1"
    assert nf.Device(torch.device("cpu")) == "cpu"


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cuda:-1", "cuda:", "cpu:", "cuda:²", 3, None])
def test_device_refuses_what_is_no_device_and_says_what_is(bad):
    with pytest.raises((ValueError, TypeError), match="Device: expected"):
        nf.Device(bad)


# ----------------------------------------------------------------------------- Module.to
def test_to_cuda_moves_parameters_gradients_and_buffers(on_fake_device):
    model = _model()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    assert model.to("cuda") is model
    assert all(is_fake(a) for a in _arrays(model))
    assert nf.device_of(model) == "cuda:0" and nf.device_of(model[0].weight) == "cuda"
    model.to("cpu")
    assert all(type(a) is np.ndarray for a in _arrays(model))
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
        assert v.dtype == before[k].dtype  # the integer counter of BatchNorm kept its dtype
    assert nf.device_of(model) == "cpu"


def test_to_takes_device_and_dtype_in_any_form(on_fake_device):
    model = _model()
    model.to("cuda", np.float64)
    assert model[0].weight.data.dtype == np.float64 and is_fake(model[0].weight.data)
    model.to(dtype=np.float32, device="cpu")
    assert model[0].weight.data.dtype == np.float32 and type(model[0].weight.data) is np.ndarray
    model.cuda().cpu()
    assert nf.device_of(model) == "cpu"
    assert model.cuda(0) is model and nf.device_of(model) == "cuda:0"


def test_gradients_follow_their_parameters(on_fake_device):
    model = _model()
    x, _ = _data(8)
    model(x)
    model.backward(np.ones((8, 3), np.float32))
    grads = [p.grad.copy() for p in model.parameters()]
    model.to("cuda")
    for p, g in zip(model.parameters(), grads):
        np.testing.assert_array_equal(backend.to_numpy(p.grad), g)


@pytest.mark.parametrize(
    "args, message",
    [
        ((np.int32,), "expected a floating dtype, got int32"),
        (("gpu",), "expected a device .* or a floating dtype"),
        (("cpu", "cpu"), "expected at most one device"),
        ((), "expected a device, a dtype or both"),
    ],
)
def test_to_refuses_bad_arguments_naming_the_module(args, message):
    with pytest.raises(TypeError, match=r"Sequential\.to: " + message):
        _model().to(*args)


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
def test_cuda_without_cupy_says_what_to_install():
    model = _model()
    with pytest.raises(nf.DeviceError, match=r"pip install 'nnframe\[cuda\]'"):
        model.to("cuda")
    assert all(type(a) is np.ndarray for a in _arrays(model))  # nothing moved
    assert not nf.cuda_is_available()


# ----------------------------------------------------------------------------- mixed devices
def test_host_input_into_a_gpu_model_is_named_with_the_fix(on_fake_device):
    model = _model().to("cuda")
    x, _ = _data(4)
    with pytest.raises(nf.DeviceError, match=r"Dense\(.*expected an input on cuda:0.*got an"):
        model(x)
    assert is_fake(model(nf.to_device(x, "cuda")))


def test_gpu_input_into_a_host_model_is_named_too(on_fake_device):
    x, _ = _data(4)
    with pytest.raises(nf.DeviceError, match=r"expected an input on cpu.*model.to\('cuda:0'\)"):
        _model()(nf.to_device(x, "cuda"))


def test_to_device_moves_nested_data_and_leaves_the_rest(on_fake_device):
    x, y = _data(4)
    moved = nf.to_device({"x": x, "pair": (y, None), "n": 3}, "cuda")
    assert is_fake(moved["x"]) and is_fake(moved["pair"][0])
    assert moved["pair"][1] is None and moved["n"] == 3
    assert nf.to_device(moved["x"], "cuda") is moved["x"]  # already there: no copy
    back = nf.to_device(moved, "cpu")
    assert type(back["x"]) is np.ndarray
    np.testing.assert_array_equal(back["x"], x)


# ----------------------------------------------------------------------------- training
def _fit(device, optimizer="adam", epochs=3):
    nf.manual_seed(0)
    model = _model()
    if device is not None:
        model.to(device)
    make = {"adam": nf.optim.Adam, "sgd": nf.optim.SGD}[optimizer]
    opt = make(model.parameters(), lr=0.05)
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), opt, metrics=["accuracy"])
    x, y = _data()
    history = trainer.fit(x, y, epochs=epochs, batch_size=16, verbose=0, validation_data=(x, y))
    return model, trainer, history


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_training_on_the_device_matches_the_cpu(on_fake_device, optimizer):
    cpu_model, _, cpu_history = _fit(None, optimizer)
    gpu_model, trainer, gpu_history = _fit("cuda", optimizer)
    assert all(is_fake(a) for a in _arrays(gpu_model))
    assert all(
        is_fake(v)
        for s in trainer.optimizer.state.values()
        for v in s.values()
        if hasattr(v, "shape")
    )
    # float32 on a real GPU sums in another order, and Adam's m / sqrt(v) lets those last-bit
    # differences grow over 12 steps: the tolerance is the float32 one of tests/test_gpu.py x 10
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(gpu_history.history[key], cpu_history.history[key], rtol=1e-4)
    for a, b in zip(cpu_model.parameters(), gpu_model.parameters()):
        np.testing.assert_allclose(backend.to_numpy(b.data), a.data, rtol=1e-4, atol=1e-5)


def test_predict_returns_host_arrays_unless_asked(on_fake_device):
    model, trainer, _ = _fit("cuda", epochs=1)
    x, _ = _data(10)
    out = trainer.predict(x, batch_size=4)
    assert type(out) is np.ndarray and out.shape == (10, 3)
    kept = trainer.predict(x, batch_size=4, device_output=True)
    assert is_fake(kept)
    np.testing.assert_allclose(backend.to_numpy(kept), out)
    assert isinstance(trainer.evaluate(x, _data(10)[1])["accuracy"], float)


def test_optimizer_state_follows_a_model_moved_after_steps(on_fake_device):
    x, y = _data(16)

    def run(move):
        nf.manual_seed(0)
        model = _model()
        opt = nf.optim.Adam(model.parameters(), lr=0.01)
        loss = nf.CrossEntropyLoss()
        for step in range(4):
            if step == 2 and move:
                model.to("cuda")
            xb = nf.to_device(x, "cuda") if move and step >= 2 else x
            yb = nf.to_device(y, "cuda") if move and step >= 2 else y
            opt.zero_grad()
            loss(model(xb), yb)
            model.backward(loss.backward())
            opt.step()
        return [backend.to_numpy(p.data) for p in model.parameters()], opt

    expected, _ = run(False)
    got, opt = run(True)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert all(is_fake(s["exp_avg"]) for s in opt.state.values())


# ----------------------------------------------------------------------------- files
def test_a_gpu_model_saves_the_same_file_and_loads_onto_a_device(on_fake_device, tmp_path):
    model = _model().to("cuda")
    nf.save(model, tmp_path / "m.safetensors")
    host = nf.load(tmp_path / "m.safetensors")
    assert nf.device_of(host) == "cpu"
    for (k, a), b in zip(host.state_dict().items(), model.state_dict().values()):
        np.testing.assert_array_equal(a, backend.to_numpy(b), err_msg=k)
    on_gpu = nf.load(tmp_path / "m.safetensors", device="cuda")
    assert nf.device_of(on_gpu) == "cuda:0" and all(is_fake(a) for a in _arrays(on_gpu))
    nf.save_weights(model, tmp_path / "w.safetensors")
    target = _model(seed=5).to("cuda")
    nf.load_weights(target, tmp_path / "w.safetensors")
    assert all(is_fake(a) for a in _arrays(target))


def test_a_checkpoint_of_a_gpu_run_resumes_on_the_cpu(on_fake_device, tmp_path):
    model, trainer, _ = _fit("cuda", epochs=1)
    nf.save_checkpoint(tmp_path / "c.ckpt", model, trainer.optimizer)
    host = _model(seed=9)
    opt = nf.optim.Adam(host.parameters(), lr=0.05)
    nf.load_checkpoint(tmp_path / "c.ckpt", host, opt)
    for a, b in zip(host.parameters(), model.parameters()):
        np.testing.assert_array_equal(a.data, backend.to_numpy(b.data))
    assert all(type(s["exp_avg"]) is np.ndarray for s in opt.state.values())


# ----------------------------------------------------------------------------- data-parallel
class _HostOnlyRank:
    """Rank 0 of 2 whose collectives accept host arrays only (MPI without CUDA awareness): the
    other rank holds ``other`` for every array averaged, and root's values for broadcasts."""

    rank, size = 0, 2

    def __init__(self, other: float):
        self.other, self.seen = other, []

    def _host(self, array):
        assert type(array) is np.ndarray, f"a {type(array).__name__} reached MPI"
        self.seen.append(array.size)

    def allreduce_mean_(self, array):
        self._host(array)
        array[...] = (array + self.other) / 2
        return array

    def broadcast_(self, array, root=0):
        self._host(array)
        return array

    def broadcast_object(self, obj, root=0):
        return obj

    def allgather(self, obj):
        return [obj, obj]


def test_data_parallel_stages_device_arrays_through_the_host(on_fake_device):
    from nnframe.training.distributed import DataParallel

    model = _model().to("cuda")
    comm = _HostOnlyRank(other=1.0)
    dp = DataParallel(model, nf.optim.SGD(model.parameters(), lr=0.1), comm=comm)
    x, y = _data(8)
    loss = nf.CrossEntropyLoss()
    loss(model(nf.to_device(x, "cuda")), nf.to_device(y, "cuda"))
    model.backward(loss.backward())
    grads = [backend.to_numpy(p.grad).copy() for p in model.parameters()]
    assert dp.average_gradients()
    for p, g in zip(model.parameters(), grads):
        assert is_fake(p.grad)
        np.testing.assert_allclose(backend.to_numpy(p.grad), (g + 1.0) / 2, rtol=1e-6)
    dp.average_buffers()
    assert all(is_fake(a) for a in _arrays(model)) and comm.seen


def test_an_input_on_another_gpu_of_the_same_kind_is_named(on_fake):
    # two stand-in GPUs: arrays remember the index they were moved to
    from nnframe.core import device

    where: dict = {}

    def move(a, index):
        out = _standin_copy(a)
        where[id(out)] = index
        return out

    undo = device.register_device(
        "cuda", on_fake, move=move, index_of=lambda a: where.get(id(a), 0)
    )
    try:
        model = nf.Dense(4, 2, rng=0).to("cuda:1")
        x = nf.to_device(np.ones((3, 4), np.float32), "cuda:0")
        with pytest.raises(
            nf.DeviceError, match=r"expected an input on cuda:1.*got an array on cuda:0"
        ):
            model(x)
        assert model(nf.to_device(np.ones((3, 4), np.float32), "cuda:1")).shape == (3, 2)
    finally:
        undo()


def _standin_copy(a):
    from tests.standin import fake

    return fake.array(np.asarray(backend.to_numpy(a)))


# ----------------------------------------------------------------------------- constructors
def test_constructors_take_pytorchs_device_and_configs_leave_it_out(on_fake_device, tmp_path):
    model = nf.Transformer(8, 2, 1, 1, 16, 0.0, device="cuda", rng=0)
    assert all(is_fake(a) for a in _arrays(model))
    assert "device" not in model.get_config()["config"]
    nf.save(model, tmp_path / "t.safetensors")
    assert nf.device_of(nf.load(tmp_path / "t.safetensors")) == "cpu"  # loads anywhere


def test_a_user_parameter_named_device_that_is_no_device_is_left_alone(on_fake_device):
    class Sensor(nf.Module):
        def __init__(self, device="thermometer-3"):
            super().__init__()
            self.device_name = device
            self.scale = nf.Parameter(np.ones(2, np.float32))

    assert type(Sensor().scale.data) is np.ndarray
    assert type(Sensor("kitchen").scale.data) is np.ndarray
    assert is_fake(Sensor("cuda").scale.data)  # a device after all: PyTorch's convention


def test_summary_clipping_and_anomaly_mode_work_on_a_gpu_model(on_fake_device):
    model = _model().to("cuda")
    table = str(nf.summary(model, (4,)))  # its zero batch goes to the model's device
    assert "Dense" in table and "Trainable params: 75" in table
    x, _ = _data(4)
    with nf.detect_anomaly():
        y = model(nf.to_device(x, "cuda"))
        model.backward(nf.to_device(np.ones(y.shape, np.float32), "cuda"))
    assert nf.clip_grad_norm_(model.parameters(), 1e-3) > 1e-3
    assert all(is_fake(p.grad) for p in model.parameters())


def test_the_trainer_works_inside_its_models_gpu(on_fake):
    # CuPy makes new arrays on its current GPU: a model on cuda:1 is trained inside use(cuda:1)
    import contextlib

    from nnframe.core import device

    entered = []

    @contextlib.contextmanager
    def use(index):
        entered.append(index)
        yield

    undo = device.register_device("cuda", on_fake, move=lambda a, index: _standin_copy(a), use=use)
    try:
        model, trainer, _ = _fit("cuda:1", epochs=1)
        assert entered == [1]  # fit (its validation inside it)
        trainer.predict(_data(4)[0])
        trainer.evaluate(*_data(4))
        assert entered == [1, 1, 1]
        _fit("cuda", epochs=1)  # GPU 0, CuPy's default: nothing to enter
        assert entered == [1, 1, 1]
        with nf.core.device.use("cuda:1"):
            assert entered[-1] == 1 and len(entered) == 4
    finally:
        undo()


@pytest.mark.parametrize(
    "make",
    [
        lambda: nf.CrossEntropyLoss(weight=np.array([1, 2, 3], np.float32)),
        lambda: nf.NLLLoss(weight=np.array([1, 2, 3], np.float32)),
        lambda: nf.MultiMarginLoss(weight=np.array([1, 2, 3], np.float32)),
    ],
)
def test_loss_weights_move_with_to_and_with_the_trainers_model(make, on_fake_device):
    x, y = _data(8)
    pred = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    host = make()
    expected = host(pred, y), host.backward()
    loss = make().to("cuda")
    assert is_fake(loss.weight)
    got = loss(nf.to_device(pred, "cuda"), nf.to_device(y, "cuda")), loss.backward()
    assert is_fake(got[1])
    np.testing.assert_allclose(float(got[0]), expected[0], rtol=1e-6)
    np.testing.assert_allclose(backend.to_numpy(got[1]), expected[1], rtol=1e-6)
    assert type(loss.cpu().weight) is np.ndarray
    # a loss given to a Trainer follows its model to the device
    model = _model().to("cuda")
    trainer = nf.Trainer(model, make(), nf.optim.SGD(model.parameters(), lr=0.1))
    trainer.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert is_fake(trainer.loss.weight)


# ----------------------------------------------------------------------------- properties


@given(st.one_of(st.text(max_size=12), st.integers(), st.none(), st.floats()))
def test_device_parsing_refuses_anything_else_with_nnframes_errors(spec):
    try:
        device = nf.Device(spec)
    except (TypeError, ValueError) as error:
        assert str(error).startswith("Device: expected")
    else:
        assert str(device) in ("cpu", f"cuda:{device.index}")
        assert nf.Device(str(device)) == device


_leaf = st.one_of(
    st.none(),
    st.integers(-5, 5),
    st.builds(lambda n, s: np.arange(n, dtype=np.float32) * s, st.integers(0, 4), st.floats(-2, 2)),
)
_tree = st.recursive(
    _leaf,
    lambda kids: st.one_of(
        st.lists(kids, max_size=3),
        st.tuples(kids, kids),
        st.dictionaries(st.text(max_size=3), kids, max_size=3),
    ),
    max_leaves=8,
)


@given(_tree)
def test_to_device_and_back_keeps_every_value_and_structure(tree):
    from nnframe.core import device as device_module
    from tests.standin import fake

    undo_kind = backend.register_array_module(
        type(fake.zeros(1)), fake, to_numpy=lambda a: np.array(a.view(np.ndarray))
    )
    undo = device_module.register_device(
        "cuda", fake, move=lambda a, index: fake.array(np.asarray(backend.to_numpy(a)))
    )
    try:
        there = nf.to_device(tree, "cuda")
        back = nf.to_device(there, "cpu")
    finally:
        undo()
        undo_kind()

    def same(a, b):
        assert type(a) is type(b) or (isinstance(a, np.ndarray) and type(b) is np.ndarray)
        if isinstance(a, dict):
            assert a.keys() == b.keys()
            for k in a:
                same(a[k], b[k])
        elif isinstance(a, (list, tuple)):
            assert len(a) == len(b)
            for x, y in zip(a, b):
                same(x, y)
        elif isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
        else:
            assert a == b

    same(tree, back)
