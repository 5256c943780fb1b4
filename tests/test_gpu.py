"""The GPU itself (issue 18): nnframe on CuPy and a real CUDA device, against numpy.

Skipped, with the reason, where CuPy is not installed or sees no GPU (CI, most laptops): the
same paths run there through the CPU stand-in (tests/test_backend.py, tests/test_device.py). On
a machine with an NVIDIA GPU and ``pip install 'nnframe[cuda]'`` this module checks:

- every layer, loss and optimizer case of tests/test_backend.py (its tables, its helpers) on
  ``"cuda"``, moved there with ``nf.to_device``, against numpy: float32 to 1e-5 and float64 to
  1e-10, relative to the largest magnitude of each array (GEMMs and reductions sum in another
  order on the GPU, so elementwise ulps are not the measure);
- every test of tests/test_device.py that runs on the stand-in device (training, predict,
  optimizer state, files, mixed devices), run again here with the real device: the fixture
  ``on_fake_device`` they ask for is replaced below by one that gives CuPy, and their
  ``is_fake`` check becomes "is a CuPy array";
- placement on a second GPU (``"cuda:1"``) where there is one.

Not a module-level ``pytest.skip``: tests/test_registry.py imports every test file, and a skip
raised while importing this one would skip that meta-test too. A ``pytestmark`` skips every
test here instead, with the same reason.

The first run on a machine compiles CuPy's kernels (cached in ~/.cupy/kernel_cache afterwards),
which is most of this module's time.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import nnframe as nf
from nnframe.core import backend
from nnframe.core.device import cuda_missing
from tests import test_device
from tests.test_backend import LAYERS, LOSSES, OPTIMIZERS, _loss_run, _optimizer_run, _run

CHECKED_MODULES: list = []  # numbers on a device, not gradient checks


NO_GPU = cuda_missing()  # None where CuPy imports and sees a GPU, else why not
pytestmark = pytest.mark.skipif(NO_GPU is not None, reason=f"no GPU: {NO_GPU}")

# relative tolerance per dtype, of each array's largest magnitude (see the module docstring)
RTOL = {np.float32: 1e-5, np.float64: 1e-10}
DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]


def _is_cupy(a) -> bool:
    import cupy

    return isinstance(a, cupy.ndarray)


def _cast(dtype):
    """Floating numpy arrays to ``dtype`` (None: left as the tables make them); the rest as is."""

    def cast(a):
        if dtype is not None and isinstance(a, np.ndarray) and a.dtype.kind == "f":
            return a.astype(dtype)
        return a

    return cast


def _on(device, dtype):
    """What moves one table array (or argument) to ``device``, cast to ``dtype`` first."""
    cast = _cast(dtype)

    def move(a):
        a = cast(a)
        return nf.to_device(a, device) if isinstance(a, np.ndarray) else a

    return move


def _assert_close(got, want, rtol, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert got.dtype == want.dtype, (what, got.dtype, want.dtype)
    if want.dtype.kind not in "fc":  # indices, counters, masks: equal
        np.testing.assert_array_equal(got, want, err_msg=what)
        return
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=what)


def _compare(host, device, rtol, what):
    assert len(host) == len(device), what
    for i, (a, b) in enumerate(zip(host, device)):
        _assert_close(b, a, rtol, f"{what} [array {i}]")


# ----------------------------------------------------------------------------- the tables
def _layer_run(monkeypatch, name, device, dtype):
    """test_backend's ``_run`` of LAYERS[name] with the model placed by ``model.to(device,
    dtype)`` (what users call: layers with dtype-dependent tables rebuild them) and the inputs
    cast and moved by ``nf.to_device``."""
    make, inputs = LAYERS[name]

    def build():
        model = make()
        return model.to(device) if dtype is None else model.to(device, dtype)

    monkeypatch.setitem(LAYERS, name, (build, inputs))
    try:
        return _run(name, _on(device, dtype))
    finally:
        monkeypatch.setitem(LAYERS, name, (make, inputs))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", [n for n in sorted(LAYERS) if LAYERS[n] is not None])
def test_layer_on_cuda_gives_numpys_numbers(name, dtype, monkeypatch):
    """Output, input gradient and every parameter gradient (eval mode: no random draws)."""
    cast = None if dtype is np.float32 else dtype  # float32: the tables' own inputs
    host = _layer_run(monkeypatch, name, "cpu", cast)
    device = _layer_run(monkeypatch, name, "cuda", cast)
    if dtype is np.float64:  # the cast reached every floating array
        assert all(a.dtype != np.float32 for a in device), name
    _compare(host, device, RTOL[dtype], name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_on_cuda_gives_numpys_numbers(name, dtype):
    cast = None if dtype is np.float32 else dtype
    host = _loss_run(name, _on("cpu", cast))
    device = _loss_run(name, _on("cuda", cast))
    _compare(host, device, RTOL[dtype], name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_on_cuda_gives_numpys_numbers(name, dtype):
    """Three steps with gradient clipping; the parameters after them."""
    host = _optimizer_run(name, _on("cpu", dtype))
    device = _optimizer_run(name, _on("cuda", dtype))
    assert all(a.dtype == dtype for a in device)
    _compare(host, device, RTOL[dtype], name)


# ----------------------------------------------------------------------------- test_device.py
@pytest.fixture
def on_fake_device(monkeypatch):
    """The real ``"cuda"`` device, under the name test_device.py's tests ask for: nothing is
    registered (CuPy is the device), and their ``is_fake`` means "a CuPy array"."""
    import cupy

    monkeypatch.setattr(test_device, "is_fake", _is_cupy)
    yield cupy
    cupy.cuda.Device().synchronize()


# Every test of test_device.py that runs on the stand-in device, collected here too (with its
# parametrization) and run with the fixture above: new tests there are picked up.
DEVICE_TESTS = sorted(
    name
    for name, fn in vars(test_device).items()
    if name.startswith("test_")
    and callable(fn)
    and "on_fake_device" in inspect.signature(fn).parameters
)
for _name in DEVICE_TESTS:
    globals()[_name] = getattr(test_device, _name)
del _name


def test_the_device_tests_were_collected():
    assert len(DEVICE_TESTS) >= 10, DEVICE_TESTS
    assert "test_training_on_the_device_matches_the_cpu" in DEVICE_TESTS


def _fit64(device, optimizer):
    """test_device.py's training run in float64 (its data cast), on ``device``."""
    nf.manual_seed(0)
    model = test_device._model().to(device, np.float64)
    make = {"adam": nf.optim.Adam, "sgd": nf.optim.SGD}[optimizer]
    trainer = nf.Trainer(
        model, nf.CrossEntropyLoss(), make(model.parameters(), lr=0.05), metrics=["accuracy"]
    )
    x, y = test_device._data()
    x = x.astype(np.float64)
    history = trainer.fit(x, y, epochs=3, batch_size=16, verbose=0, validation_data=(x, y))
    return model, history


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_float64_training_on_cuda_matches_the_cpu_closely(optimizer):
    """In float64 the GPU's other summation order stays far below the tolerance, after 12
    steps: a wrong gradient or update on the device could not hide in float32 noise."""
    cpu_model, cpu_history = _fit64("cpu", optimizer)
    gpu_model, gpu_history = _fit64("cuda", optimizer)
    assert nf.device_of(gpu_model) == "cuda:0"
    assert all(_is_cupy(p.data) and p.data.dtype == np.float64 for p in gpu_model.parameters())
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(gpu_history.history[key], cpu_history.history[key], rtol=1e-8)
    for (name, a), b in zip(cpu_model.state_dict().items(), gpu_model.state_dict().values()):
        _assert_close(backend.to_numpy(b), a, 1e-8, name)


def test_cuda_arrays_report_their_device():
    import cupy

    x = nf.to_device(np.ones((2, 3), np.float32), "cuda")
    assert isinstance(x, cupy.ndarray) and x.device.id == 0
    assert nf.device_of(x) == "cuda:0" and backend.array_module(x) is cupy
    assert backend.is_array(x) and type(backend.to_numpy(x)) is np.ndarray
    assert nf.to_device(x, nf.Device("cuda", 0)) is x  # already there: no copy


@pytest.mark.parametrize("dtype", DTYPES)
def test_stepped_matmul_runs_on_cublas_and_gives_matmuls_numbers(dtype):
    """The recurrent layers' per-step GEMM: cuBLAS on pointers (checked once against matmul
    when first used; a mismatch would fall back to matmul, which this test reports)."""
    import cupy

    rng = np.random.default_rng(0)
    wide = cupy.asarray(rng.normal(size=(5, 9)).astype(dtype))
    b = cupy.asarray(rng.normal(size=(4, 12, 6)).astype(dtype))
    out = cupy.zeros((3, 5, 6), dtype)
    step = backend.stepped_matmul(wide[:, 2:], b[:, 5:], out)
    assert step.__name__ == "step", "the cuBLAS path was not taken (self-check failed?)"
    step(3, 1)
    want = backend.to_numpy(wide[:, 2:] @ b[3, 5:])
    _assert_close(backend.to_numpy(out[1]), want, RTOL[dtype], "stepped GEMM")
    assert not bool(out[0].any()) and not bool(out[2].any())


# ----------------------------------------------------------------------------- a second GPU
def _second_gpu():
    import cupy

    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("one GPU only: cuda:1 placement needs two")
    return cupy


def test_a_model_moves_to_the_second_gpu_and_computes_there():
    cupy = _second_gpu()
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    host = test_device._model()
    want = host(x)
    model = test_device._model().to("cuda:1")
    assert nf.device_of(model) == "cuda:1"
    for p in model.parameters():
        assert _is_cupy(p.data) and p.data.device.id == 1
        assert _is_cupy(p.grad) and p.grad.device.id == 1
    for name, b in model.named_buffers():
        assert b is None or b.device.id == 1, name
    xd = nf.to_device(x, "cuda:1")
    assert xd.device.id == 1 and nf.device_of(xd) == "cuda:1"
    with cupy.cuda.Device(1):  # CuPy runs kernels on the current device
        got = model(xd)
        dx = model.backward(cupy.ones_like(got))
        assert got.device.id == 1 and dx.device.id == 1
    _assert_close(backend.to_numpy(got), want, RTOL[np.float32], "output on cuda:1")
    back = nf.to_device(xd, "cuda:0")  # across GPUs
    assert back.device.id == 0
    np.testing.assert_array_equal(backend.to_numpy(back), x)
    model.to("cuda:0")
    assert all(p.data.device.id == 0 for p in model.parameters())


def test_a_file_loads_onto_the_second_gpu(tmp_path):
    _second_gpu()
    model = test_device._model()
    nf.save(model, tmp_path / "m.safetensors")
    loaded = nf.load(tmp_path / "m.safetensors", device="cuda:1")
    assert nf.device_of(loaded) == "cuda:1"
    assert all(p.data.device.id == 1 for p in loaded.parameters())
