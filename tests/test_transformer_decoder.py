"""TransformerDecoderLayer, TransformerDecoder and Transformer: float64 parity with PyTorch
(same weights; outputs, both input gradients and every parameter gradient; post- and pre-norm,
both layouts, masks, unbatched), gradient checks, empty batches and errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnframe as nf
from tests.strategies import seeds

torch = pytest.importorskip("torch")

CHECKED_MODULES = [nf.TransformerDecoderLayer, nf.TransformerDecoder, nf.Transformer]

TOL = {"rtol": 1e-9, "atol": 1e-11}


def _load(layer, ref):
    ref.load_state_dict({k: torch.tensor(v) for k, v in layer.state_dict().items()})


def _parity(layer, ref, xs, kwargs=None, ref_kwargs=None, seed=0):
    rng = np.random.default_rng(seed)
    _load(layer, ref)
    xt = [torch.tensor(x, requires_grad=True) for x in xs]
    yt = ref(*xt, **(ref_kwargs or {}))
    y = layer(*xs, **(kwargs or {}))
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOL)
    g = rng.normal(size=y.shape)
    yt.backward(torch.tensor(g))
    for a, t in zip(layer.backward(g), xt):
        np.testing.assert_allclose(a, t.grad.numpy(), **TOL)
    named = dict(ref.named_parameters())
    assert sorted(named) == sorted(n for n, _ in layer.named_parameters())
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(p.grad, named[name].grad.numpy(), **TOL)


def _inputs(rng, n, t, s, e, batch_first):
    tgt = rng.normal(size=(n, t, e) if batch_first else (t, n, e))
    memory = rng.normal(size=(n, s, e) if batch_first else (s, n, e))
    return tgt, memory


def _masks(rng, n, t, s):
    """A causal float target mask and a boolean memory padding mask that never hides every key."""
    causal = nf.Transformer.generate_square_subsequent_mask(t, np.float64)
    padding = rng.random((n, s)) < 0.3
    padding[:, 0] = False
    return causal, padding


@settings(max_examples=10)
@given(
    seed=seeds,
    norm_first=st.booleans(),
    batch_first=st.booleans(),
    activation=st.sampled_from(["relu", "gelu"]),
    masked=st.booleans(),
)
def test_decoder_layer_parity(seed, norm_first, batch_first, activation, masked):
    rng = np.random.default_rng(seed)
    args = (8, 2, 12, 0.0, activation, 1e-5, batch_first, norm_first)
    layer = nf.TransformerDecoderLayer(*args, rng=seed).to(np.float64)
    ref = torch.nn.TransformerDecoderLayer(*args).double()
    xs = _inputs(rng, 3, 4, 5, 8, batch_first)
    kw = rkw = None
    if masked:
        causal, padding = _masks(rng, 3, 4, 5)
        kw = {"tgt_mask": causal, "memory_key_padding_mask": padding}
        rkw = {k: torch.tensor(v) for k, v in kw.items()}
    _parity(layer, ref, xs, kw, rkw, seed)


@settings(max_examples=6)
@given(seed=seeds, norm_first=st.booleans(), batch_first=st.booleans(), final_norm=st.booleans())
def test_decoder_stack_parity(seed, norm_first, batch_first, final_norm):
    rng = np.random.default_rng(seed)
    args = {
        "dim_feedforward": 12,
        "dropout": 0.0,
        "batch_first": batch_first,
        "norm_first": norm_first,
    }
    layer = nf.TransformerDecoderLayer(8, 2, **args, rng=seed)
    decoder = nf.TransformerDecoder(layer, 2, nf.LayerNorm(8) if final_norm else None).to(
        np.float64
    )
    ref_layer = torch.nn.TransformerDecoderLayer(8, 2, **args)
    ref = torch.nn.TransformerDecoder(ref_layer, 2, torch.nn.LayerNorm(8) if final_norm else None)
    causal = nf.Transformer.generate_square_subsequent_mask(4, np.float64)
    xs = _inputs(rng, 2, 4, 3, 8, batch_first)
    kw = {"tgt_mask": causal, "tgt_is_causal": True}
    rkw = {"tgt_mask": torch.tensor(causal), "tgt_is_causal": True}
    _parity(decoder, ref.double(), xs, kw, rkw, seed)


@pytest.mark.filterwarnings("ignore:enable_nested_tensor")
@settings(max_examples=6)
@given(seed=seeds, norm_first=st.booleans(), batch_first=st.booleans())
def test_transformer_parity(seed, norm_first, batch_first):
    rng = np.random.default_rng(seed)
    args = (8, 2, 2, 1, 12, 0.0, "relu", None, None, 1e-5, batch_first, norm_first)
    model = nf.Transformer(*args, rng=seed).to(np.float64)
    ref = torch.nn.Transformer(*args).double()
    tgt, src = _inputs(rng, 2, 4, 5, 8, batch_first)  # tgt (N, 4, E), src (N, 5, E)
    causal, padding = _masks(rng, 2, 4, 5)
    kw = {"tgt_mask": causal, "src_key_padding_mask": padding, "memory_key_padding_mask": padding}
    rkw = {k: torch.tensor(v) for k, v in kw.items()}
    _parity(model, ref, (src, tgt), kw, rkw, seed)


def test_unbatched_inputs_match_pytorch():
    rng = np.random.default_rng(0)
    layer = nf.TransformerDecoderLayer(8, 2, 12, 0.0, rng=0).to(np.float64)
    ref = torch.nn.TransformerDecoderLayer(8, 2, 12, 0.0, batch_first=True).double()
    padding = np.array([False, True, False])
    _parity(
        layer, ref, (rng.normal(size=(4, 8)), rng.normal(size=(3, 8))),
        {"memory_key_padding_mask": padding}, {"memory_key_padding_mask": torch.tensor(padding)},
    )  # fmt: skip
    model = nf.Transformer(8, 2, 1, 1, 12, 0.0, rng=1).to(np.float64)
    ref = torch.nn.Transformer(8, 2, 1, 1, 12, 0.0, batch_first=True).double()
    _parity(model, ref, (rng.normal(size=(5, 8)), rng.normal(size=(4, 8))))


def test_gradcheck_and_two_calls_before_two_backwards():
    rng = np.random.default_rng(0)
    x, m = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 2, 4))
    layer = nf.TransformerDecoderLayer(4, 2, 6, 0.0, rng=0)
    nf.check_module(layer, (x, m))
    nf.check_module(nf.TransformerDecoderLayer(4, 2, 6, 0.0, norm_first=True, rng=0), (x, m))
    nf.check_module(nf.TransformerDecoder(layer, 2, nf.LayerNorm(4)), (x, m))
    nf.check_module(nf.Transformer(4, 2, 1, 2, 6, 0.0, rng=0), (m, x))
    seq_first = nf.Transformer(4, 2, 1, 1, 6, 0.0, batch_first=False, rng=0)
    nf.check_module(
        seq_first, (m, np.ascontiguousarray(x.transpose(1, 0, 2)))
    )  # (S, N, E) and (T, N, E)


def test_empty_batch_gives_empty_output_and_gradients():
    model = nf.Transformer(4, 2, 1, 1, 6, 0.0, rng=0)
    y = model(np.zeros((0, 3, 4), np.float32), np.zeros((0, 2, 4), np.float32))
    assert y.shape == (0, 2, 4)
    d_src, d_tgt = model.backward(np.zeros_like(y))
    assert d_src.shape == (0, 3, 4) and d_tgt.shape == (0, 2, 4)


def test_dropout_masks_differ_between_copies_and_training_runs():
    layer = nf.TransformerDecoderLayer(8, 2, 16, 0.5, rng=0)
    decoder = nf.TransformerDecoder(layer, 2)
    assert decoder.layers[0].dropout.rng is not decoder.layers[1].dropout.rng
    x, m = np.ones((2, 3, 8), np.float32), np.ones((2, 4, 8), np.float32)
    assert not np.allclose(decoder(x, m), decoder(x, m))
    decoder.eval()
    np.testing.assert_array_equal(decoder(x, m), decoder(x, m))


def test_errors_name_the_layer():
    layer = nf.TransformerDecoderLayer(8, 2, rng=0)
    with pytest.raises(
        nf.ShapeError,
        match=r"TransformerDecoderLayer\(\.\.\.\): expected memory of shape \(2, S, 8\), got \(3, 4, 8\)",
    ):
        layer(np.ones((2, 3, 8)), np.ones((3, 4, 8)))
    with pytest.raises(
        nf.ShapeError,
        match=r"(?s)TransformerDecoderLayer\(.*\): expected input of shape \(N, L, 8\)",
    ):
        layer(np.ones((2, 3, 5)), np.ones((2, 4, 8)))
    with pytest.raises(ValueError, match=r"TransformerDecoderLayer: invalid activation='tanh'"):
        nf.TransformerDecoderLayer(8, 2, activation="tanh")
    with pytest.raises(ValueError, match=r"TransformerDecoder: invalid num_layers=0"):
        nf.TransformerDecoder(layer, 0)
    with pytest.raises(
        nf.ShapeError, match=r"Transformer\(\.\.\.\): expected tgt of shape \(2, T, 8\)"
    ):
        nf.Transformer(8, 2, 1, 1, 16, rng=0)(np.ones((2, 3, 8)), np.ones((3, 3, 8)))
    with pytest.raises(ValueError, match=r"Transformer: expected device None or a device such"):
        nf.Transformer(8, 2, 1, 1, device="gpu")


def test_encoder_layer_takes_the_same_activations_as_the_decoder_layer(tmp_path):
    x = np.random.default_rng(0).normal(size=(2, 3, 8))
    by_name = nf.TransformerEncoderLayer(8, 2, 12, 0.0, "gelu", rng=0).to(np.float64)
    by_function = nf.TransformerEncoderLayer(8, 2, 12, 0.0, torch.nn.functional.gelu, rng=0)
    np.testing.assert_array_equal(by_function.to(np.float64)(x), by_name(x))
    tanh = nf.TransformerEncoderLayer(8, 2, 12, 0.0, nf.GELU(approximate="tanh"), rng=0)
    ref = torch.nn.TransformerEncoderLayer(
        8, 2, 12, 0.0, lambda t: torch.nn.functional.gelu(t, approximate="tanh"), batch_first=True
    ).double()
    ref.load_state_dict({k: torch.tensor(v) for k, v in tanh.to(np.float64).state_dict().items()})
    np.testing.assert_allclose(tanh(x), ref(torch.tensor(x)).detach().numpy(), rtol=1e-12)
    nf.save(tanh, tmp_path / "layer.safetensors")
    assert nf.load(tmp_path / "layer.safetensors").activation.approximate == "tanh"
    model = nf.Transformer(8, 2, 1, 1, 12, 0.0, nf.GELU(approximate="tanh"), rng=0)
    layers = [model.encoder.layers[0], model.decoder.layers[0]]
    assert all(layer.activation.approximate == "tanh" for layer in layers)
    with pytest.raises(ValueError, match=r"TransformerEncoderLayer: invalid activation='tanh'"):
        nf.TransformerEncoderLayer(8, 2, activation="tanh")


def test_activation_as_pytorch_function_or_nnframe_module():
    rng = np.random.default_rng(0)
    xs = _inputs(rng, 2, 3, 4, 8, True)
    f_gelu = torch.nn.functional.gelu
    layer = nf.TransformerDecoderLayer(8, 2, 12, 0.0, f_gelu, batch_first=True, rng=0)
    ref = torch.nn.TransformerDecoderLayer(8, 2, 12, 0.0, f_gelu, batch_first=True).double()
    assert isinstance(layer.activation, nf.GELU)
    _parity(layer.to(np.float64), ref, xs)
    tanh_gelu = nf.TransformerDecoderLayer(8, 2, 12, 0.0, nf.GELU(approximate="tanh"), rng=0)
    ref = torch.nn.TransformerDecoderLayer(
        8, 2, 12, 0.0, lambda x: f_gelu(x, approximate="tanh"), batch_first=True
    ).double()
    _parity(tanh_gelu.to(np.float64), ref, xs)
    model = nf.Transformer(8, 2, 1, 1, 12, 0.0, torch.nn.functional.relu, rng=0)
    assert isinstance(model.encoder.layers[0].activation, nf.ReLU)
