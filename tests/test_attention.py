"""MultiheadAttention, TransformerEncoderLayer/Encoder, PositionalEncoding: gradient checks,
PyTorch parity, masks, and an Embedding + attention classifier that learns."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnframe as nf
from tests.strategies import normal_array, seeds

CHECKED_MODULES = [
    nf.MultiheadAttention,
    nf.TransformerEncoderLayer,
    nf.TransformerEncoder,
    nf.PositionalEncoding,
]


def random_padding(seed, n, s):
    """A (N, S) boolean key-padding mask that leaves at least one key per sequence."""
    lengths = np.random.default_rng(seed).integers(1, s + 1, size=n)
    return np.arange(s)[None, :] >= lengths[:, None]


# ------------------------------------------------------------------ gradient checks
@given(
    seed=seeds, n=st.integers(1, 2), l=st.integers(1, 3), heads=st.sampled_from([1, 2]),
    causal=st.booleans(), padding=st.booleans(), average=st.booleans(), batch_first=st.booleans(),
)  # fmt: skip
def test_self_attention_gradcheck(seed, n, l, heads, causal, padding, average, batch_first):
    e = 4
    mha = nf.MultiheadAttention(e, heads, batch_first=batch_first, rng=seed)
    x = normal_array(seed, (n, l, e) if batch_first else (l, n, e))
    kwargs = {"is_causal": causal, "average_attn_weights": average}
    if padding:
        kwargs["key_padding_mask"] = random_padding(seed, n, l)
    nf.check_module(mha, x, forward_kwargs=kwargs)


@given(seed=seeds, n=st.integers(1, 2), l=st.integers(1, 3), s=st.integers(1, 3))
def test_cross_attention_kdim_vdim_gradcheck(seed, n, l, s):
    mha = nf.MultiheadAttention(4, 2, kdim=3, vdim=5, rng=seed)
    q, k, v = (
        normal_array(seed, (n, l, 4)),
        normal_array(seed + 1, (n, s, 3)),
        normal_array(seed + 2, (n, s, 5)),
    )
    float_mask = normal_array(seed + 3, (n * 2, l, s))  # additive, per batch and head
    nf.check_module(
        mha, (q, k, v), forward_kwargs={"attn_mask": float_mask},
        expected_shape=((n, l, 4), (n, l, s)),
    )  # fmt: skip


def test_same_dims_cross_attention_and_dropout_gradcheck():
    mha = nf.MultiheadAttention(4, 2, dropout=0.3, bias=False, rng=0)
    q, kv = normal_array(0, (2, 3, 4)), normal_array(1, (2, 5, 4))
    nf.check_module(mha, (q, kv, kv), forward_kwargs={"need_weights": False})


@given(
    seed=seeds, norm_first=st.booleans(), activation=st.sampled_from(["relu", "gelu"]),
    padding=st.booleans(),
)  # fmt: skip
def test_encoder_layer_gradcheck(seed, norm_first, activation, padding):
    layer = nf.TransformerEncoderLayer(
        4, 2, dim_feedforward=6, dropout=0.2, activation=activation, norm_first=norm_first, rng=seed
    )
    x = normal_array(seed, (2, 3, 4))
    kwargs = {"src_key_padding_mask": random_padding(seed, 2, 3)} if padding else {}
    nf.check_module(layer, x, forward_kwargs=kwargs, directional=True)


@given(seed=seeds, batch_first=st.booleans())
def test_encoder_stack_gradcheck(seed, batch_first):
    layer = nf.TransformerEncoderLayer(4, 2, dim_feedforward=5, batch_first=batch_first, rng=seed)
    encoder = nf.TransformerEncoder(layer, num_layers=2, norm=nf.LayerNorm(4))
    x = normal_array(seed, (2, 3, 4))
    nf.check_module(encoder, x, forward_kwargs={"is_causal": True}, directional=True)


@given(seed=seeds, dropout=st.sampled_from([0.0, 0.5]), batch_first=st.booleans())
def test_positional_encoding_gradcheck(seed, dropout, batch_first):
    pe = nf.PositionalEncoding(5, max_len=8, dropout=dropout, batch_first=batch_first, rng=seed)
    nf.check_module(pe, normal_array(seed, (2, 4, 5)), expected_shape=(2, 4, 5))


# ------------------------------------------------------------------ semantics
def test_fully_masked_row_gives_zero_weights_not_nan():
    mha = nf.MultiheadAttention(4, 2, rng=0).to(np.float64)
    x = normal_array(0, (1, 3, 4))
    mask = np.zeros((3, 3), dtype=bool)
    mask[1] = True  # query 1 may attend to nothing
    out, w = mha(x, attn_mask=mask)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(w[0, 1], 0.0)
    np.testing.assert_allclose(w[0, [0, 2]].sum(axis=-1), 1.0)
    # with zero weights the row's output is out_proj's bias (zero at init)
    np.testing.assert_allclose(out[0, 1], mha.out_proj.bias.data)
    grad = mha.backward(np.ones_like(out))
    assert np.isfinite(grad).all()
    nf.check_module(mha, x, forward_kwargs={"attn_mask": mask})


def test_boolean_and_additive_masks_agree():
    mha = nf.MultiheadAttention(4, 1, rng=0).to(np.float64)
    x = normal_array(1, (2, 4, 4))
    pad = np.array([[False, False, True, True], [False, False, False, True]])
    out_bool, w_bool = mha(x, key_padding_mask=pad)
    out_add, w_add = mha(x, key_padding_mask=np.where(pad, -np.inf, 0.0))
    np.testing.assert_allclose(out_bool, out_add)
    np.testing.assert_allclose(w_bool[..., 2:][pad[:, None, 2:].repeat(4, axis=1)], 0.0)
    causal_out, _ = mha(x, is_causal=True)
    mask_out, _ = mha(x, attn_mask=np.triu(np.ones((4, 4), dtype=bool), k=1))
    np.testing.assert_allclose(causal_out, mask_out)


def test_attention_worked_example():
    """One head, identity projections: the weights are softmax(q k^T / sqrt(2))."""
    mha = nf.MultiheadAttention(2, 1, bias=False, rng=0).to(np.float64)
    mha.in_proj_weight.data[...] = np.vstack([np.eye(2)] * 3)
    mha.out_proj.weight.data[...] = np.eye(2)
    x = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    out, w = mha(x)
    e = np.exp(1 / np.sqrt(2))
    expected = np.array([[e, 1], [1, e]]) / (e + 1)
    np.testing.assert_allclose(w[0], expected)
    np.testing.assert_allclose(out[0], expected @ x[0])


def test_parameter_names_and_init():
    mha = nf.MultiheadAttention(6, 3, rng=0)
    assert [n for n, _ in mha.named_parameters()] == [
        "in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias",
    ]  # fmt: skip
    assert mha.in_proj_weight.shape == (18, 6)
    assert not mha.in_proj_bias.data.any() and not mha.out_proj.bias.data.any()
    sep = nf.MultiheadAttention(6, 3, kdim=4, vdim=5, rng=0)
    assert [n for n, _ in sep.named_parameters()][:3] == [
        "q_proj_weight", "k_proj_weight", "v_proj_weight",
    ]  # fmt: skip
    assert sep.k_proj_weight.shape == (6, 4) and sep.v_proj_weight.shape == (6, 5)


def test_encoder_deep_copies_and_reseeds():
    layer = nf.TransformerEncoderLayer(4, 2, dim_feedforward=8, rng=0)
    encoder = nf.TransformerEncoder(layer, num_layers=3)
    assert len(encoder.layers) == 3
    assert encoder.layers[0].linear1.weight is not layer.linear1.weight
    np.testing.assert_array_equal(encoder.layers[2].linear1.weight.data, layer.linear1.weight.data)
    assert encoder.layers[0].dropout.rng is not encoder.layers[1].dropout.rng
    assert encoder.layers[0].dropout.rng is encoder.layers[0].self_attn.rng


def test_positional_encoding_table():
    pe = nf.PositionalEncoding(6, max_len=20)
    y = pe(np.zeros((1, 20, 6)))
    t, i = 7, 2  # dimension 2i = 4
    np.testing.assert_allclose(y[0, t, 2 * i], np.sin(t / 10000 ** (2 * i / 6)), rtol=1e-6)
    np.testing.assert_allclose(y[0, t, 2 * i + 1], np.cos(t / 10000 ** (2 * i / 6)), rtol=1e-6)
    assert pe.state_dict() == {}
    odd = nf.PositionalEncoding(5, max_len=4)  # an odd width has one cosine fewer
    assert odd.pe.shape == (4, 5)


def test_errors():
    with pytest.raises(
        ValueError, match=r"MultiheadAttention: invalid num_heads=3 \(must divide embed_dim=4\)"
    ):
        nf.MultiheadAttention(4, 3)
    mha = nf.MultiheadAttention(4, 2)
    with pytest.raises(nf.ShapeError, match=r"expected query of shape \(N, L, 4\), got \(2, 3\)"):
        mha(np.ones((2, 3)))
    with pytest.raises(
        nf.ShapeError, match=r"expected key_padding_mask of shape \(2, 3\), got \(3, 2\)"
    ):
        mha(np.ones((2, 3, 4)), key_padding_mask=np.zeros((3, 2), dtype=bool))
    with pytest.raises(
        nf.ShapeError, match=r"expected attn_mask of shape \(3, 3\) or \(4, 3, 3\), got \(2, 3\)"
    ):
        mha(np.ones((2, 3, 4)), attn_mask=np.zeros((2, 3), dtype=bool))
    with pytest.raises(TypeError, match="expected both key and value"):
        mha(np.ones((2, 3, 4)), np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match=r"TransformerEncoderLayer: invalid activation='tanh'"):
        nf.TransformerEncoderLayer(4, 2, activation="tanh")
    with pytest.raises(
        nf.ShapeError,
        match=r"PositionalEncoding\(4, max_len=3\): expected input of shape \(N, T, 4\) with T <= 3, got \(1, 5, 4\)",
    ):
        nf.PositionalEncoding(4, max_len=3)(np.zeros((1, 5, 4)))


# ------------------------------------------------------------------ PyTorch parity
def _to_torch(torch, module, ours):
    module.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})


@pytest.mark.parametrize("cross", [False, True])
def test_mha_matches_torch(cross):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    n, l, s, e = 2, 3, 4, 6
    kw = dict(kdim=5, vdim=3) if cross else {}
    ours = nf.MultiheadAttention(e, 3, rng=1, **kw).to(np.float64)
    theirs = torch.nn.MultiheadAttention(e, 3, batch_first=True, **kw).double()
    _to_torch(torch, theirs, ours)
    q = rng.normal(size=(n, l, e))
    k = rng.normal(size=(n, s, kw.get("kdim", e))) if cross else q
    v = rng.normal(size=(n, s, kw.get("vdim", e))) if cross else q
    pad = random_padding(2, n, k.shape[1])
    attn = rng.normal(size=(l, k.shape[1]))
    qt, kt, vt = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    out_t, w_t = theirs(
        qt,
        kt,
        vt,
        key_padding_mask=torch.tensor(np.where(pad, -np.inf, 0.0)),
        attn_mask=torch.tensor(attn),
    )
    out, w = ours(q, k, v, key_padding_mask=pad, attn_mask=attn)
    np.testing.assert_allclose(out, out_t.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(w, w_t.detach().numpy(), atol=1e-12)
    g, gw = rng.normal(size=out.shape), rng.normal(size=w.shape)
    ((out_t * torch.tensor(g)).sum() + (w_t * torch.tensor(gw)).sum()).backward()
    dq, dk, dv = ours.backward((g, gw))
    for a, b in ((dq, qt), (dk, kt), (dv, vt)):
        np.testing.assert_allclose(a, b.grad.numpy(), atol=1e-12)
    grads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, grads[name].grad.numpy(), atol=1e-12, err_msg=name)


@pytest.mark.parametrize(("norm_first", "activation"), [(False, "relu"), (True, "gelu")])
def test_encoder_matches_torch(norm_first, activation):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    layer = nf.TransformerEncoderLayer(
        8, 2, dim_feedforward=16, dropout=0.0, activation=activation, norm_first=norm_first, rng=0
    )
    ours = nf.TransformerEncoder(layer, 2, norm=nf.LayerNorm(8)).to(np.float64)
    t_layer = torch.nn.TransformerEncoderLayer(
        8, 2, 16, dropout=0.0, activation=activation, norm_first=norm_first, batch_first=True
    )
    theirs = torch.nn.TransformerEncoder(
        t_layer, 2, norm=torch.nn.LayerNorm(8), enable_nested_tensor=False
    ).double()
    _to_torch(torch, theirs, ours)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = rng.normal(size=(3, 5, 8))
    pad = random_padding(1, 3, 5)
    xt = torch.tensor(x, requires_grad=True)
    y_t = theirs(
        xt,
        mask=torch.tensor(np.triu(np.ones((5, 5), dtype=bool), 1)),
        src_key_padding_mask=torch.tensor(pad),
    )
    y = ours(x, mask=np.triu(np.ones((5, 5), dtype=bool), 1), src_key_padding_mask=pad)
    np.testing.assert_allclose(y, y_t.detach().numpy(), atol=1e-10)
    g = rng.normal(size=y.shape)
    (y_t * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(ours.backward(g), xt.grad.numpy(), atol=1e-10)
    grads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, grads[name].grad.numpy(), atol=1e-10, err_msg=name)


# ------------------------------------------------------------------ learning
def test_embedding_attention_classifier_learns_sentiment():
    """Sequences of positive, negative and neutral words; the label is whether positives
    outnumber negatives. Embedding + positional encoding + one encoder layer + mean pooling."""
    vocab, pos_words, neg_words, T = 20, range(1, 6), range(6, 11), 8  # 0 is padding

    def make(n, seed):
        rng = np.random.default_rng(seed)
        lengths = rng.integers(3, T + 1, size=n)
        tokens = rng.integers(11, vocab, size=(n, T))  # neutral filler
        y = rng.integers(0, 2, size=n)
        for i in range(n):
            n_major = rng.integers(2, 4)
            major, minor = (pos_words, neg_words) if y[i] else (neg_words, pos_words)
            slots = rng.permutation(lengths[i])
            tokens[i, slots[:n_major]] = rng.choice(major, size=n_major)
            tokens[i, slots[n_major : n_major + 1]] = rng.choice(minor)
            tokens[i, lengths[i] :] = 0
        return tokens, lengths, y

    class Classifier(nf.Module):
        def __init__(self):
            super().__init__()
            self.embed = nf.Embedding(vocab, 16, padding_idx=0, rng=0)
            self.pos = nf.PositionalEncoding(16, max_len=T)
            self.encoder = nf.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, rng=1)
            self.head = nf.Dense(16, 2, rng=2)

        def forward(self, tokens, lengths):
            pad = np.arange(T)[None, :] >= lengths[:, None]
            h = self.encoder(self.pos(self.embed(tokens)), src_key_padding_mask=pad)
            keep = (~pad)[:, :, None] / lengths[:, None, None]  # mean over real steps
            self.save_for_backward(keep, h.shape)
            return self.head((h * keep).sum(axis=1).astype(np.float32))

        def backward(self, grad_output):
            keep, shape = self.saved
            g = self.head.backward(grad_output)[:, None, :] * keep
            self.embed.backward(self.pos.backward(self.encoder.backward(g.astype(np.float32))))

    model, loss_fn = Classifier(), nf.CrossEntropyLoss()
    opt = nf.optim.Adam(model.parameters(), lr=0.01)
    tokens, lengths, y = make(512, 0)
    for _ in range(8):
        for i in range(0, 512, 64):
            opt.zero_grad()
            loss_fn(model(tokens[i : i + 64], lengths[i : i + 64]), y[i : i + 64])
            model.backward(loss_fn.backward())
            opt.step()
    tokens, lengths, y = make(500, 1)
    accuracy = (model(tokens, lengths).argmax(axis=1) == y).mean()
    assert accuracy > 0.95


@pytest.mark.parametrize("batch_first", [True, False])
def test_self_attention_and_encoder_layer_skip_the_input_gradient_of_data(batch_first):
    # the packed projections' backward (one product for q, k and v) with and without dL/dx:
    # the parameter gradients are the same, and no input gradient comes back without it
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 8))
    g = rng.normal(size=(2, 5, 8))
    if not batch_first:
        x, g = x.transpose(1, 0, 2), g.transpose(1, 0, 2)
    for make in (
        lambda: nf.MultiheadAttention(8, 2, batch_first=batch_first, rng=0),
        lambda: nf.TransformerEncoderLayer(8, 2, 16, 0.0, batch_first=batch_first, rng=0),
    ):
        full, data = make().to(np.float64), make().to(np.float64)
        data.needs_input_grad = False
        out = full(x)
        dx = full.backward((g, None) if isinstance(out, tuple) else g)
        out = data(x)
        assert data.backward((g, None) if isinstance(out, tuple) else g) is None
        assert dx is not None and dx.shape == x.shape
        for (name, a), (_, b) in zip(full.named_parameters(), data.named_parameters()):
            np.testing.assert_allclose(b.grad, a.grad, rtol=1e-12, atol=1e-14, err_msg=name)
