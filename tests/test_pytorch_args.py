"""PyTorch's constructor arguments (issue 14): each new argument against PyTorch in float64, with
the same weights (outputs, input gradients and every parameter gradient), and through
``check_module``. The signatures themselves are compared in test_conformance_signatures.py."""

import numpy as np
import pytest

import nnframe as nf

CHECKED_MODULES = [
    nf.BatchNorm1d,
    nf.BatchNorm2d,
    nf.BatchNorm3d,
    nf.GroupNorm,
    nf.InstanceNorm1d,
    nf.InstanceNorm2d,
    nf.LayerNorm,
    nf.MultiheadAttention,
    nf.MaxPool1d,
    nf.MaxPool2d,
    nf.AdaptiveMaxPool1d,
    nf.AdaptiveMaxPool2d,
    nf.MaxUnpool1d,
    nf.MaxUnpool2d,
    nf.Embedding,
    nf.EmbeddingBag,
    nf.ReLU,
    nf.LeakyReLU,
    nf.ELU,
    nf.CELU,
    nf.SELU,
    nf.SiLU,
    nf.Mish,
    nf.Hardtanh,
    nf.Hardsigmoid,
    nf.Hardswish,
    nf.ReLU6,
]

RTOL = 1e-7  # float64 on both sides: the same math up to summation order


def _allclose(name, ours, theirs, rtol=RTOL):
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape, f"{name}: shape {ours.shape} != {theirs.shape}"
    scale = max(1.0, float(np.max(np.abs(theirs), initial=0.0)))
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * scale, err_msg=name)


def parity(torch, ours, theirs, inputs, *, kwargs=None, t_kwargs=None, train=True, seed=0):
    """Runs both modules on the same inputs (floats get gradients) and the same random output
    gradients; compares outputs, input gradients and every parameter gradient by name."""
    ours = ours.to(np.float64)
    theirs = theirs.double()
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    ours.train(train)
    theirs.train(train)
    rng = np.random.default_rng(seed)
    inputs = tuple(inputs)
    t_in = []
    for a in inputs:
        t = torch.from_numpy(np.array(a))
        if t.is_floating_point():
            t.requires_grad_(True)
        t_in.append(t)
    out = ours(*inputs, **(kwargs or {}))
    t_out = theirs(*t_in, **(t_kwargs or {}))
    outs = out if isinstance(out, tuple) else (out,)
    t_outs = t_out if isinstance(t_out, tuple) else (t_out,)
    assert len(outs) == len(t_outs)
    grads = []
    for i, (o, t) in enumerate(zip(outs, t_outs)):
        if t.is_floating_point():
            _allclose(f"output {i}", o, t.detach().numpy())
            grads.append(rng.normal(size=o.shape))
        else:
            np.testing.assert_array_equal(o, t.numpy(), err_msg=f"output {i}")
            grads.append(None)
    ours.zero_grad()
    g_in = ours.backward(tuple(grads) if isinstance(out, tuple) else grads[0])
    g_in = g_in if isinstance(g_in, tuple) else (g_in,)
    pairs = [(t, torch.from_numpy(g)) for t, g in zip(t_outs, grads) if g is not None]
    torch.autograd.backward([t for t, _ in pairs], [g for _, g in pairs])
    for i, t in enumerate(t_in):
        if t.requires_grad:
            _allclose(f"grad of input {i}", g_in[i], t.grad.numpy())
    t_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert name in t_params, f"{name} is not a PyTorch parameter"
        want = t_params[name].grad
        want = np.zeros(p.data.shape) if want is None else want.to_dense().numpy()
        _allclose(f"grad of {name}", p.grad, want)
    return out


# ---------------------------------------------------------------------- bias= on the norms
NORMS = [
    ("BatchNorm1d", (4,), (5, 4, 3)),
    ("BatchNorm2d", (3,), (4, 3, 2, 3)),
    ("BatchNorm3d", (2,), (3, 2, 2, 2, 3)),
    ("InstanceNorm1d", (3,), (2, 3, 5)),
    ("InstanceNorm2d", (3,), (2, 3, 3, 4)),
    ("GroupNorm", (2, 4), (3, 4, 5)),
    ("LayerNorm", ((3, 4),), (2, 3, 4)),
]


def _affine_kwargs(name):
    return {"elementwise_affine": True} if name == "LayerNorm" else {"affine": True}


@pytest.mark.parametrize("name, args, shape", NORMS)
@pytest.mark.parametrize("train", [True, False])
def test_norm_without_bias_matches_pytorch(name, args, shape, train):
    torch = pytest.importorskip("torch")
    kwargs = {**_affine_kwargs(name), "bias": False}
    ours = getattr(nf, name)(*args, **kwargs)
    theirs = getattr(torch.nn, name)(*args, **kwargs)
    assert ours.bias is None and theirs.bias is None
    rng = np.random.default_rng(1)
    ours.weight.data[...] = rng.normal(size=ours.weight.shape)
    if getattr(ours, "running_mean", None) is not None:
        ours.running_mean[...] = rng.normal(size=ours.running_mean.shape)
        ours.running_var[...] = rng.uniform(0.5, 2.0, size=ours.running_var.shape)
    x = rng.normal(size=shape) * 2 + 1
    parity(torch, ours, theirs, (x,), train=train)
    assert set(ours.state_dict()) == set(theirs.state_dict())


@pytest.mark.parametrize("name, args, shape", NORMS)
def test_norm_without_bias_gradcheck(name, args, shape):
    layer = getattr(nf, name)(*args, **_affine_kwargs(name), bias=False)
    layer.weight.data[...] = np.random.default_rng(2).normal(size=layer.weight.shape)
    nf.check_module(layer, np.random.default_rng(3).normal(size=shape), expected_shape=shape)
    assert "bias" not in dict(layer.named_parameters())


def test_norm_bias_must_be_a_bool():
    with pytest.raises(TypeError, match=r"BatchNorm1d: expected bias to be a bool, got 'no'"):
        nf.BatchNorm1d(3, bias="no")


def test_norm_device_and_dtype_in_pytorch_places():
    bn = nf.BatchNorm1d(3, 1e-5, 0.1, True, True, "cpu", np.float64)
    assert bn.weight.data.dtype == np.float64
    assert nf.GroupNorm(1, 2, 1e-5, True, None, None).weight.data.dtype == np.float32
    with pytest.raises(ValueError, match=r"GroupNorm: expected device None or a device such"):
        nf.GroupNorm(1, 2, device="gpu")


# ---------------------------------------------------------------------- MultiheadAttention
MHA_FORMS = [
    dict(add_bias_kv=True),
    dict(add_zero_attn=True),
    dict(add_bias_kv=True, add_zero_attn=True),
    dict(add_bias_kv=True, add_zero_attn=True, kdim=5, vdim=3),
    dict(add_bias_kv=True, add_zero_attn=True, bias=False),
]


def _form_id(form):
    return ",".join(f"{k}={v}" for k, v in form.items())


@pytest.mark.parametrize("form", MHA_FORMS, ids=_form_id)
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("masks", [False, True])
def test_mha_bias_kv_and_zero_attn_match_pytorch(form, batch_first, masks):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    n, l, s, e = 2, 3, 4, 6
    ours = nf.MultiheadAttention(e, 3, batch_first=batch_first, rng=1, **form)
    theirs = torch.nn.MultiheadAttention(e, 3, batch_first=batch_first, **form)
    cross = "kdim" in form

    def seq(length, features):
        return rng.normal(size=(n, length, features) if batch_first else (length, n, features))

    q = seq(l, e)
    inputs = (q, seq(s, form["kdim"]), seq(s, form["vdim"])) if cross else (q,)
    s_in = s if cross else l
    kwargs, t_kwargs = {}, {}
    if masks:
        pad = np.zeros((n, s_in), dtype=bool)
        pad[0, -1] = True
        attn = rng.normal(size=(l, s_in))
        kwargs = dict(key_padding_mask=pad, attn_mask=attn)
        t_kwargs = dict(
            key_padding_mask=torch.from_numpy(np.where(pad, -np.inf, 0.0)),
            attn_mask=torch.from_numpy(attn),
        )
    if not cross:  # self-attention: nnframe takes the query alone, PyTorch it three times
        t_kwargs = dict(t_kwargs, key=None, value=None)
    out = parity(torch, ours, _SelfAttention(theirs) if not cross else theirs, inputs,
                 kwargs=kwargs, t_kwargs=t_kwargs)  # fmt: skip
    extra = form.get("add_bias_kv", False) + form.get("add_zero_attn", False)
    assert out[1].shape == (n, l, s_in + extra)


class _SelfAttention:
    """A PyTorch MultiheadAttention called as ``m(x)``: self-attention with query = key = value."""

    def __init__(self, m):
        self.m = m

    def __call__(self, x, key=None, value=None, **kwargs):
        return self.m(x, x, x, **kwargs)

    def __getattr__(self, name):
        return getattr(self.m, name)

    def double(self):
        self.m.double()
        return self


@pytest.mark.parametrize("form", MHA_FORMS[:4], ids=_form_id)
def test_mha_bias_kv_and_zero_attn_gradcheck(form):
    rng = np.random.default_rng(5)
    mha = nf.MultiheadAttention(4, 2, rng=0, **form)
    if "kdim" in form:
        x = (rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 5)), rng.normal(size=(2, 5, 3)))
    else:
        x = rng.normal(size=(2, 3, 4))
    pad = np.zeros((2, 5 if "kdim" in form else 3), dtype=bool)
    pad[1, 0] = True
    nf.check_module(mha, x, forward_kwargs=dict(key_padding_mask=pad))


def test_mha_bias_kv_parameters_and_repr():
    mha = nf.MultiheadAttention(4, 2, 0.0, True, True, True, rng=0)
    assert mha.bias_k.shape == (1, 1, 4) and mha.bias_v.shape == (1, 1, 4)
    assert {"bias_k", "bias_v"} <= set(mha.state_dict())
    assert repr(mha).splitlines()[0] == (
        "MultiheadAttention(4, num_heads=2, add_bias_kv=True, add_zero_attn=True"
    )
    with pytest.raises(TypeError, match="MultiheadAttention: expected add_zero_attn to be a bool"):
        nf.MultiheadAttention(4, 2, add_zero_attn=1)


# ---------------------------------------------------------------------- return_indices, MaxUnpool
POOLS = [
    ("MaxPool1d", dict(kernel_size=3, stride=2, padding=1), (2, 3, 9)),
    ("MaxPool1d", dict(kernel_size=2, dilation=2, ceil_mode=True), (2, 2, 8)),
    ("MaxPool2d", dict(kernel_size=2), (2, 3, 4, 6)),
    ("MaxPool2d", dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)), (2, 2, 7, 5)),
    ("MaxPool2d", dict(kernel_size=3, stride=2, dilation=(1, 2), ceil_mode=True), (1, 2, 8, 9)),
    ("AdaptiveMaxPool1d", dict(output_size=3), (2, 3, 10)),
    ("AdaptiveMaxPool1d", dict(output_size=2), (2, 3, 40)),
    ("AdaptiveMaxPool2d", dict(output_size=(3, 4)), (2, 3, 7, 9)),
    ("AdaptiveMaxPool2d", dict(output_size=(2, 3)), (2, 3, 4, 6)),
    ("AdaptiveMaxPool2d", dict(output_size=1), (2, 3, 6, 6)),
]


@pytest.mark.parametrize("name, kwargs, shape", POOLS)
def test_pool_return_indices_matches_pytorch(name, kwargs, shape):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(6).normal(size=shape)
    x[0, 0, ..., :2] = 3.0  # ties: the first maximum is PyTorch's
    ours = getattr(nf, name)(**kwargs, return_indices=True)
    theirs = getattr(torch.nn, name)(**kwargs, return_indices=True)
    y, idx = parity(torch, ours, theirs, (x,))
    assert idx.dtype == np.int64


@pytest.mark.parametrize("name, kwargs, shape", POOLS)
def test_pool_return_indices_gradcheck(name, kwargs, shape):
    x = np.random.default_rng(7).normal(size=shape)
    layer = getattr(nf, name)(**kwargs, return_indices=True)
    nf.check_module(layer, x)


UNPOOLS = [
    ("1d", dict(kernel_size=2), (2, 3, 8), None),
    ("1d", dict(kernel_size=3, stride=2, padding=1), (2, 3, 9), None),
    ("1d", dict(kernel_size=3, stride=2), (2, 3, 9), (10,)),
    ("2d", dict(kernel_size=2), (2, 3, 4, 6), None),
    ("2d", dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)), (2, 2, 7, 5), None),
    ("2d", dict(kernel_size=2, stride=2), (1, 2, 5, 7), (1, 2, 5, 7)),
]


@pytest.mark.parametrize("dim, kwargs, shape, size", UNPOOLS)
def test_max_unpool_matches_pytorch(dim, kwargs, shape, size):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(8).normal(size=shape)
    pool = getattr(nf, f"MaxPool{dim}")(**kwargs, return_indices=True)
    y, idx = pool(x)
    ours = getattr(nf, f"MaxUnpool{dim}")(**kwargs)
    theirs = getattr(torch.nn, f"MaxUnpool{dim}")(**kwargs)
    out = ours(y, idx, output_size=size)
    t_y = torch.from_numpy(y).requires_grad_(True)
    t_out = theirs(t_y, torch.from_numpy(idx), output_size=size)
    _allclose("output", out, t_out.detach().numpy())
    g = np.random.default_rng(9).normal(size=out.shape)
    t_out.backward(torch.from_numpy(g))
    dy, didx = ours.backward(g)
    assert didx is None
    _allclose("grad of input", dy, t_y.grad.numpy())
    if size is not None:
        assert out.shape[2:] == tuple(size)[-(len(shape) - 2) :]


@pytest.mark.parametrize("dim, kwargs, shape, size", UNPOOLS)
def test_max_unpool_gradcheck(dim, kwargs, shape, size):
    rng = np.random.default_rng(10)
    y, _ = getattr(nf, f"MaxPool{dim}")(**kwargs, return_indices=True)(rng.normal(size=shape))
    unpool = getattr(nf, f"MaxUnpool{dim}")(**kwargs)
    plane = int(np.prod(unpool(y, np.zeros(y.shape, np.int64), output_size=size).shape[2:]))
    # distinct indices: overlapping windows can share a maximum, and then only one of the
    # inputs written to the same place shows in the output (PyTorch's gather has the same rule)
    per_plane = int(np.prod(y.shape[2:]))
    idx = np.stack(
        [rng.choice(plane, per_plane, replace=False) for _ in range(y.shape[0] * y.shape[1])]
    )
    idx = idx.reshape(y.shape)
    nf.check_module(unpool, (y, idx), forward_kwargs=dict(output_size=size))


def test_pool_then_unpool_round_trip_in_a_model():
    """The PyTorch pattern: pool with indices, then unpool with them."""
    x = np.random.default_rng(11).normal(size=(2, 3, 4, 4))
    pool, unpool = nf.MaxPool2d(2, return_indices=True), nf.MaxUnpool2d(2)
    y, idx = pool(x)
    z = unpool(y, idx)
    assert z.shape == x.shape
    np.testing.assert_array_equal(z[z != 0], x[z != 0])  # the maxima are back in place
    g = np.ones_like(z)
    dy, _ = unpool.backward(g)
    dx = pool.backward((dy, None))
    np.testing.assert_array_equal(dx, (z != 0).astype(float))


def test_max_unpool_errors():
    unpool = nf.MaxUnpool1d(2)
    x = np.ones((1, 1, 3))
    with pytest.raises(ValueError, match=r"MaxUnpool1d\(.*\): expected indices in \[0, 6\)"):
        unpool(x, np.array([[[0, 2, 6]]]))
    with pytest.raises(nf.ShapeError, match=r"MaxUnpool1d\(.*\): expected integer indices"):
        unpool(x, np.zeros((1, 1, 2), dtype=np.int64))
    with pytest.raises(nf.ShapeError, match=r"MaxUnpool1d\(.*\): expected output_size of 1"):
        unpool(x, np.zeros((1, 1, 3), dtype=np.int64), output_size=(9,))
    assert repr(unpool) == "MaxUnpool1d(kernel_size=(2,), stride=(2,), padding=(0,))"
    with pytest.raises(TypeError, match="MaxPool2d: expected return_indices to be a bool"):
        nf.MaxPool2d(2, return_indices="yes")


def test_max_unpool_unbatched():
    y, idx = nf.MaxPool1d(2, return_indices=True)(np.array([[1.0, 3.0, 4.0, 2.0]]))
    assert y.shape == idx.shape == (1, 2)
    np.testing.assert_array_equal(nf.MaxUnpool1d(2)(y, idx), [[0.0, 3.0, 4.0, 0.0]])


# ---------------------------------------------------------------------- Embedding, EmbeddingBag
@pytest.mark.parametrize("padding_idx", [None, 1])
@pytest.mark.parametrize("sparse", [False, True])
def test_embedding_scale_grad_by_freq_and_sparse_match_pytorch(padding_idx, sparse):
    torch = pytest.importorskip("torch")
    # PyTorch refuses the two together in backward; nnframe's dense gradient allows both
    kwargs = dict(padding_idx=padding_idx, scale_grad_by_freq=not sparse, sparse=sparse)
    ours = nf.Embedding(6, 3, **kwargs, rng=0)
    theirs = torch.nn.Embedding(6, 3, **kwargs)
    index = np.array([[0, 1, 2, 2], [2, 5, 1, 0]])
    parity(torch, ours, theirs, (index,))


BAG_FORMS = [
    dict(mode="sum", scale_grad_by_freq=True),
    dict(mode="mean", scale_grad_by_freq=True),
    dict(mode="mean", scale_grad_by_freq=True, padding_idx=2),
    dict(mode="sum", scale_grad_by_freq=True, include_last_offset=True),
    dict(mode="sum", sparse=True, padding_idx=6),
    dict(mode="max", padding_idx=6),
]
BAG_INDEX = np.array([1, 2, 2, 4, 2, 6, 1, 0])  # 2 three times, 1 twice, the others once


def _bag_offsets(form, m):
    return np.array([0, 3, 3, 5] + ([m] if form.get("include_last_offset") else []))


class _BagViaEmbedding:
    """PyTorch's EmbeddingBag written as F.embedding (whose scale_grad_by_freq is right) then a
    per-bag sum or mean. PyTorch 2.13's CPU EmbeddingBag divides some rows by another index's
    count (pytorch/pytorch#190063, fixed upstream in #190264); CUDA and MPS divide by the index's
    own count, the documented rule, which nnframe follows."""

    def __init__(self, torch, form):
        self.torch, self.form = torch, form
        self.m = torch.nn.Embedding(
            7, 3, padding_idx=form.get("padding_idx"), scale_grad_by_freq=True
        )

    def __getattr__(self, name):
        return getattr(self.m, name)

    def double(self):
        self.m.double()
        return self

    def __call__(self, index, offsets):
        torch = self.torch
        rows = self.m(index)  # (M, D)
        keep = torch.ones(len(index), dtype=torch.bool)
        if self.form.get("padding_idx") is not None:
            keep = index != self.form["padding_idx"]
        ends = list(offsets[1:].tolist()) + [len(index)]
        if self.form.get("include_last_offset"):
            ends = list(offsets[1:].tolist())
        outs = []
        for start, end in zip(offsets.tolist(), ends):
            r = rows[start:end][keep[start:end]]
            if len(r) == 0:
                outs.append(torch.zeros(3, dtype=rows.dtype))
            else:
                outs.append(r.sum(0) if self.form["mode"] == "sum" else r.mean(0))
        return torch.stack(outs)


@pytest.mark.parametrize("form", BAG_FORMS, ids=_form_id)
def test_embedding_bag_new_arguments_match_pytorch(form):
    torch = pytest.importorskip("torch")
    ours = nf.EmbeddingBag(7, 3, **form, rng=0)
    offsets = _bag_offsets(form, len(BAG_INDEX))
    theirs = torch.nn.EmbeddingBag(7, 3, **form)
    if form.get("scale_grad_by_freq"):
        # PyTorch's own EmbeddingBag where its CPU bug cannot show (every index used twice)...
        twice = np.array([1, 2, 2, 4, 1, 6, 4, 6])
        parity(torch, nf.EmbeddingBag(7, 3, **form, rng=0), theirs, (twice, offsets))
        theirs = _BagViaEmbedding(torch, form)  # ...and the documented rule on mixed counts
    out = parity(torch, ours, theirs, (BAG_INDEX, offsets))
    assert out.shape == (4, 3)


@pytest.mark.parametrize("form", BAG_FORMS, ids=_form_id)
def test_embedding_bag_new_arguments_gradcheck(form):
    bag = nf.EmbeddingBag(7, 3, **form, rng=0)
    # scale_grad_by_freq is a rescaled gradient, not the derivative, unless indices are distinct
    index = np.array([1, 2, 3, 4, 5, 6, 0]) if form.get("scale_grad_by_freq") else BAG_INDEX
    nf.check_module(bag, index, forward_kwargs=dict(offsets=_bag_offsets(form, len(index))))
    emb = nf.Embedding(5, 2, scale_grad_by_freq=True, sparse=True, rng=0)
    nf.check_module(emb, np.array([[0, 1, 2], [4, 3, 0]])[:, :2])
    nf.check_module(nf.Embedding(5, 2, sparse=True, rng=0), np.array([[0, 1, 1], [4, 1, 0]]))


def test_embedding_bag_binds_positionally_like_pytorch():
    torch = pytest.importorskip("torch")
    ours = nf.EmbeddingBag(4, 3, None, 2.0, False, "sum")
    theirs = torch.nn.EmbeddingBag(4, 3, None, 2.0, False, "sum")
    assert (ours.mode, ours.scale_grad_by_freq, ours.max_norm) == ("sum", False, None)
    assert (theirs.mode, theirs.scale_grad_by_freq) == (ours.mode, ours.scale_grad_by_freq)
    with pytest.raises(ValueError, match=r"EmbeddingBag: invalid mode=False"):
        nf.EmbeddingBag(4, 3, None, 2.0, "sum", False)  # the old order: a clear error
    with pytest.raises(ValueError, match=r"scale_grad_by_freq=True \(not with mode='max'\)"):
        nf.EmbeddingBag(4, 3, scale_grad_by_freq=True, mode="max")


def test_embedding_pretrained_weight_and_freeze():
    table = np.arange(6.0).reshape(3, 2)
    emb = nf.Embedding(3, 2, 0, None, 2.0, False, False, table, True)
    np.testing.assert_array_equal(emb.weight.data, table)  # the padding row kept, as PyTorch
    assert emb.weight.data.dtype == np.float32 and not emb.weight.requires_grad
    nf.check_module(emb, np.array([1, 2, 2]))  # a frozen table: no gradient
    with pytest.raises(nf.ShapeError, match=r"Embedding: expected _weight of shape \(3, 2\)"):
        nf.Embedding(3, 2, _weight=np.zeros((2, 2)))
    with pytest.raises(TypeError, match=r"Embedding: expected sparse to be a bool, got 'yes'"):
        nf.Embedding(3, 2, sparse="yes")


# ---------------------------------------------------------------------- inplace, Hardtanh's aliases
INPLACE = [
    ("ReLU", ()), ("LeakyReLU", (0.1,)), ("ELU", (0.5,)), ("CELU", (0.5,)), ("SELU", ()),
    ("SiLU", ()), ("Mish", ()), ("Hardtanh", (-0.5, 0.5)), ("Hardsigmoid", ()),
    ("Hardswish", ()), ("ReLU6", ()),
]  # fmt: skip


@pytest.mark.parametrize("name, args", INPLACE)
def test_inplace_matches_pytorch_and_leaves_the_input(name, args):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(12).normal(size=(3, 4)) * 4
    x[np.abs(x) < 0.05] = 0.3  # away from the kinks
    before = x.copy()
    ours = getattr(nf, name)(*args, True)
    theirs = getattr(torch.nn, name)(*args, False)  # PyTorch's in-place autograd needs a copy
    assert ours.inplace
    parity(torch, ours, theirs, (x,))
    np.testing.assert_array_equal(x, before)
    nf.check_module(ours, x)


@pytest.mark.parametrize("name, args", [*INPLACE, ("Threshold", (0.1, 20.0))])
@pytest.mark.parametrize("inplace", [False, True])
def test_inplace_repr_matches_pytorch(name, args, inplace):
    torch = pytest.importorskip("torch")
    ours = getattr(nf, name)(*args, inplace)
    assert repr(ours) == repr(getattr(torch.nn, name)(*args, inplace))
    assert ("inplace=True" in repr(ours)) == (inplace and name not in ("Hardsigmoid", "Hardswish"))


def test_hardtanh_min_value_and_max_value():
    torch = pytest.importorskip("torch")
    ours = nf.Hardtanh(-1.0, 1.0, False, -0.25, 0.5)
    assert (ours.min_val, ours.max_val) == (-0.25, 0.5)
    theirs = torch.nn.Hardtanh(-1.0, 1.0, False, -0.25, 0.5)
    parity(torch, ours, theirs, (np.linspace(-2, 2, 9)[:, None] + 0.01,))


# ---------------------------------------------------------------------- size_average and reduce
def _loss_cases():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    p = rng.uniform(0.05, 0.95, size=(3, 4))
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    q = np.exp(rng.normal(size=(3, 4)))
    q /= q.sum(axis=1, keepdims=True)
    idx = np.array([0, 1, 3])
    sign = np.array([1.0, -1.0, -1.0])
    w = rng.uniform(0.5, 2.0, size=4)
    # (name, arguments before size_average, between size_average and reduce, after reduction,
    #  pred, target); "SA"/"RD" mark the places of size_average and reduce
    return [
        ("MSELoss", ("SA", "RD"), x, y),
        ("L1Loss", ("SA", "RD"), x, y),
        ("SmoothL1Loss", ("SA", "RD", "mean", 0.5), x, y),
        ("PoissonNLLLoss", (True, True, "SA", 1e-8, "RD"), x, rng.poisson(2.0, (3, 4)) * 1.0),
        ("BCELoss", (w, "SA", "RD"), p, rng.uniform(size=(3, 4))),
        ("BCEWithLogitsLoss", (w, "SA", "RD", "mean", w[::-1].copy()), x, p),
        ("KLDivLoss", ("SA", "RD"), logp, q),
        ("NLLLoss", (w, "SA", 1, "RD"), logp, idx),
        ("CrossEntropyLoss", (w, "SA", 1, "RD", "mean", 0.1), x, idx),
        ("MultiMarginLoss", (2, 0.7, w, "SA", "RD"), x, idx),
        ("HingeEmbeddingLoss", (0.5, "SA", "RD"), x, np.where(y > 0, 1.0, -1.0)),
        ("CosineEmbeddingLoss", (0.2, "SA", "RD"), (x, y), sign),
        ("MarginRankingLoss", (0.1, "SA", "RD"), (x[:, 0], y[:, 0]), sign),
    ]


LOSS_CASES = _loss_cases()
LEGACY = [(None, False), (True, None), (False, None), (True, True), (False, True), (True, False)]


@pytest.mark.parametrize("case", LOSS_CASES, ids=[c[0] for c in LOSS_CASES])
@pytest.mark.parametrize("size_average, reduce", LEGACY)
def test_size_average_and_reduce_match_pytorch(case, size_average, reduce):
    torch = pytest.importorskip("torch")
    name, template, pred, target = case
    fill = {"SA": size_average, "RD": reduce}
    args = [fill.get(a, a) if isinstance(a, str) else a for a in template]
    with pytest.warns(FutureWarning, match=rf"{name}: size_average and reduce are deprecated"):
        ours = getattr(nf, name)(*args)  # PyTorch's positional places
    t_args = [torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in args]
    with pytest.warns(UserWarning):  # PyTorch warns too
        theirs = getattr(torch.nn, name)(*t_args)
    assert ours.reduction == theirs.reduction
    preds = pred if isinstance(pred, tuple) else (pred,)
    t_preds = [torch.tensor(a, requires_grad=True) for a in preds]
    out = ours(pred, target)
    t_out = theirs(*t_preds, torch.from_numpy(target))
    _allclose("loss", out, t_out.detach().numpy())
    g = np.random.default_rng(1).normal(size=np.shape(out)) if ours.reduction == "none" else None
    grads = ours.backward(g)
    t_out.backward(None if g is None else torch.from_numpy(g))
    for i, (ga, t) in enumerate(zip(grads if isinstance(pred, tuple) else (grads,), t_preds)):
        _allclose(f"grad of input {i}", ga, t.grad.numpy())


@pytest.mark.parametrize("size_average, reduce", LEGACY)
def test_size_average_and_reduce_gradcheck(size_average, reduce):
    case = {c[0]: c for c in LOSS_CASES}["CrossEntropyLoss"]
    _, _, pred, target = case
    with pytest.warns(FutureWarning):
        loss = nf.CrossEntropyLoss(None, size_average, 1, reduce, label_smoothing=0.1)
    nf.check_loss(loss, pred, target)


def test_size_average_and_reduce_errors_and_defaults():
    assert nf.MSELoss(None, None, "sum").reduction == "sum"  # neither given: reduction stands
    with pytest.raises(TypeError, match=r"MSELoss: expected size_average to be None or a bool, "):
        nf.MSELoss("sum")  # the old positional reduction now lands on size_average
    with pytest.raises(TypeError, match=r"NLLLoss: expected reduce to be None or a bool, got 2"):
        nf.NLLLoss(None, None, -100, 2)
    with pytest.warns(FutureWarning, match=r"write reduction='none' instead"):
        assert repr(nf.L1Loss(reduce=False)) == "L1Loss(reduction='none')"


# ---------------------------------------------------------------------- inplace on the dropouts
DROPOUTS = [
    ("Dropout", (3, 4)),
    ("Dropout1d", (2, 3, 5)),
    ("Dropout2d", (2, 3, 2, 2)),
    ("AlphaDropout", (3, 4)),
]


@pytest.mark.parametrize("name, shape", DROPOUTS)
def test_dropout_inplace_gives_the_same_values_and_leaves_the_input(name, shape):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).normal(size=shape)
    kept = x.copy()
    plain = getattr(nf, name)(0.4, rng=5)
    inplace = getattr(nf, name)(0.4, True, rng=5)  # PyTorch's positional place
    assert inplace.inplace and not plain.inplace
    y = inplace(x)
    np.testing.assert_array_equal(y, plain(x))
    np.testing.assert_array_equal(x, kept)  # the input is never overwritten
    np.testing.assert_array_equal(inplace.backward(np.ones(shape)), plain.backward(np.ones(shape)))
    assert repr(inplace) == repr(getattr(torch.nn, name)(0.4, True))
    assert repr(plain) == f"{name}(p=0.4)"
    nf.check_module(getattr(nf, name)(0.4, True, rng=5), x, expected_shape=shape)
    # evaluation mode: the identity, as PyTorch's
    t = torch.from_numpy(x.copy())
    np.testing.assert_array_equal(inplace.eval()(x), getattr(torch.nn, name)(0.4).eval()(t))


def test_dropout_inplace_must_be_a_bool():
    with pytest.raises(TypeError, match=r"Dropout2d: expected inplace to be a bool, got 1"):
        nf.Dropout2d(0.5, 1)


# ---------------------------------------------------------------------- device and dtype
# (class, PyTorch's positional arguments before device and dtype, an input shape)
DEVICE_DTYPE = [
    ("Linear", (3, 2, True), (4, 3)),
    ("Conv1d", (2, 3, 3, 1, 1, 1, 1, True, "zeros"), (2, 2, 6)),
    ("Conv2d", (2, 3, 3, 2, 1, 1, 1, True, "reflect"), (2, 2, 5, 5)),
    ("Conv3d", (2, 2, 2, 1, 0, 1, 2, False, "zeros"), (1, 2, 3, 3, 3)),
    ("ConvTranspose1d", (2, 3, 3, 2, 1, 1, 1, True, 1, "zeros"), (2, 2, 4)),
    ("ConvTranspose2d", (2, 4, 3, 2, 0, 0, 2, True, 1, "zeros"), (1, 2, 3, 3)),
    ("ConvTranspose3d", (2, 2, 2, 1, 0, 0, 1, False, 1, "zeros"), (1, 2, 2, 2, 2)),
    ("RNN", (3, 4, 1, "relu", True, True, 0.0, True), (2, 5, 3)),
    ("LSTM", (3, 4, 2, True, True, 0.0, False, 2), (2, 5, 3)),
    ("GRU", (3, 4, 1, False, False, 0.0, True), (5, 2, 3)),
    ("RNNCell", (3, 4, True, "tanh"), (2, 3)),
    ("LSTMCell", (3, 4, True), (2, 3)),
    ("GRUCell", (3, 4, False), (2, 3)),
    ("TransformerEncoderLayer", (8, 2, 16, 0.0, "gelu", 1e-5, True, True, True), (2, 3, 8)),
]


@pytest.mark.parametrize("name, args, shape", DEVICE_DTYPE, ids=[c[0] for c in DEVICE_DTYPE])
def test_device_and_dtype_positionally_match_pytorch(name, args, shape):
    torch = pytest.importorskip("torch")
    ours = getattr(nf, name)(*args, "cpu", np.float64, rng=0)  # PyTorch's positional places
    if name in ("RNN", "LSTM", "GRU"):  # PyTorch's (*args) binds its 9th to proj_size
        theirs = getattr(torch.nn, name)(*args, device="cpu", dtype=torch.float64)
    else:
        theirs = getattr(torch.nn, name)(*args, "cpu", torch.float64)
    assert all(p.data.dtype == np.float64 for p in ours.parameters())
    assert set(ours.state_dict()) == set(theirs.state_dict())
    x = np.random.default_rng(4).normal(size=shape)
    if name == "LSTM":  # (output, (h_n, c_n)): the forward values (the math is unchanged)
        theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
        out, (h, c) = ours(x)
        t_out, (t_h, t_c) = theirs(torch.from_numpy(x))
        for a, b in ((out, t_out), (h, t_h), (c, t_c)):
            _allclose("LSTM output", a, b.detach().numpy())
    else:
        parity(torch, ours, theirs, (x,))
    # None: PyTorch's default dtype, float32 in both
    default = getattr(nf, name)(*args, None, None, rng=0)
    assert all(p.data.dtype == np.float32 for p in default.parameters())


@pytest.mark.parametrize("name, args, shape", DEVICE_DTYPE, ids=[c[0] for c in DEVICE_DTYPE])
def test_a_device_given_to_the_constructor_places_the_layer(name, args, shape, on_fake_device):
    from tests.standin import is_fake

    layer = getattr(nf, name)(*args, "cuda")  # at PyTorch's position (the CPU stand-in GPU)
    assert all(is_fake(p.data) and is_fake(p.grad) for p in layer.parameters())
    assert nf.device_of(layer) == "cuda:0"
    assert nf.device_of(getattr(nf, name)(*args, device="cpu:0")) == "cpu"
    with pytest.raises(ValueError, match=rf"{name if name != 'Linear' else 'Dense'}: expected "
                       r"device None or a device such as 'cpu' or 'cuda', got 'gpu'"):  # fmt: skip
        getattr(nf, name)(*args, "gpu")


@pytest.mark.parametrize("name", ["Dense", "Conv2d", "LSTM", "TransformerEncoderLayer"])
def test_device_and_dtype_save_and_load(name, tmp_path):
    args = {c[0]: c[1] for c in DEVICE_DTYPE}["Linear" if name == "Dense" else name]
    layer = getattr(nf, name)(*args, "cpu", np.float64, rng=0)
    config = nf.get_config(layer) if hasattr(nf, "get_config") else layer.get_config()
    assert "device" not in config["config"]  # where it was built is no part of the model
    again = (
        nf.from_config(config) if hasattr(nf, "from_config") else type(layer).from_config(config)
    )
    assert all(p.data.dtype == np.float64 for p in again.parameters())


# ---------------------------------------------------------------------- TransformerEncoder flags
def test_transformer_encoder_nested_tensor_flags_are_accepted():
    torch = pytest.importorskip("torch")
    layer = nf.TransformerEncoderLayer(8, 2, 16, 0.0, rng=0)
    encoder = nf.TransformerEncoder(layer, 2, None, False, False)  # PyTorch's positional places
    assert (encoder.enable_nested_tensor, encoder.mask_check) == (False, False)
    t_layer = torch.nn.TransformerEncoderLayer(8, 2, 16, 0.0, batch_first=True)
    theirs = torch.nn.TransformerEncoder(t_layer, 2, None, False, False)
    x = np.random.default_rng(1).normal(size=(2, 4, 8))
    parity(torch, encoder, theirs, (x,))
    with pytest.raises(TypeError, match=r"TransformerEncoder: expected mask_check to be a bool"):
        nf.TransformerEncoder(layer, 2, mask_check="yes")


# ---------------------------------------------------------------------- Upsample
UPSAMPLE = [
    ("nearest", None, (1, 2, 5)),
    ("linear", False, (1, 2, 5)),
    ("bilinear", False, (1, 2, 5, 7)),
    ("bilinear", True, (1, 2, 5, 7)),
    ("bicubic", False, (1, 1, 4, 5)),
    ("trilinear", False, (1, 1, 3, 4, 2)),
]


@pytest.mark.parametrize("mode, align_corners, shape", UPSAMPLE)
@pytest.mark.parametrize("recompute", [None, False, True])
def test_upsample_recompute_scale_factor_matches_pytorch(mode, align_corners, shape, recompute):
    torch = pytest.importorskip("torch")
    args = (None, 1.7, mode, align_corners, recompute)  # 1.7: not an integer output ratio
    ours, theirs = nf.Upsample(*args), torch.nn.Upsample(*args)
    x = np.random.default_rng(2).normal(size=shape)
    parity(torch, ours, theirs, (x,))
    nf.check_module(nf.Upsample(*args), x)


def test_upsample_recompute_scale_factor_errors():
    with pytest.raises(ValueError, match=r"Upsample: expected recompute_scale_factor only with "):
        nf.Upsample(size=4, recompute_scale_factor=True)
    with pytest.raises(TypeError, match=r"Upsample: expected recompute_scale_factor to be a bool"):
        nf.Upsample(scale_factor=2, recompute_scale_factor="yes")
    assert nf.Upsample(size=4, recompute_scale_factor=False).recompute_scale_factor is False
