"""ONNX export: every exportable layer and whole models pass onnx's checker, and ONNX Runtime's
outputs match nnframe's eval-mode outputs (float32) for two batch sizes of one exported file."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest

import nnframe as nf

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from nnframe.onnx import UnsupportedLayerError, Value, export, register_exporter  # noqa: E402
from nnframe.onnx._context import _EXPORTERS  # noqa: E402

# float32 throughout: both sides round differently (summation order, fused kernels, erf/tanh
# approximations), so the check is |ort - nf| <= ATOL + RTOL * |nf|, element-wise.
RTOL, ATOL = 1e-5, 1e-5
EXPORT_BATCH, BATCHES = 3, (1, 5)  # the file is exported at one batch size, run at two others


def floats(*shape, scale=1.0):
    """A maker of (n, *shape) float32 inputs."""

    def make(n, rng):
        return (rng.normal(size=(n, *shape)) * scale).astype(np.float32)

    return make


def tokens(length, vocab):
    def make(n, rng):
        return rng.integers(0, vocab, size=(n, length))

    return make


def _flat(out) -> list:
    if isinstance(out, dict):  # a graph model's outputs by name, in its order
        out = tuple(out.values())
    if isinstance(out, (tuple, list)):
        return [a for o in out for a in _flat(o)]
    return [] if out is None else [np.asarray(out)]


def run_both(model, make, seed=0, rtol=RTOL, atol=ATOL, batches=BATCHES, **kwargs):
    """Exports at EXPORT_BATCH, then compares ONNX Runtime with nnframe at each of ``batches``
    (the sizes of axis 0). Returns (max abs error, max error relative to |nf|) over every
    output."""
    rng = np.random.default_rng(seed)
    model.eval()
    example = make(EXPORT_BATCH, rng)
    proto = export(model, example, None, **kwargs)
    onnx.checker.check_model(proto, full_check=True)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    worst = (0.0, 0.0)
    for n in batches:
        inputs = make(n, rng)
        inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        expected = _flat(model(*inputs))
        feeds = {
            name: a.astype(np.int64) if a.dtype.kind in "iu" else a
            for name, a in zip(names, inputs)
        }
        got = session.run(None, feeds)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.shape == e.shape, (g.shape, e.shape)
            assert g.dtype == e.dtype, (g.dtype, e.dtype)
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)
            err = np.abs(g.astype(np.float64) - e)
            worst = (
                max(worst[0], float(err.max(initial=0))),
                max(worst[1], float((err / np.maximum(np.abs(e), 1e-3)).max(initial=0))),
            )
    return worst


# Time-major layers (batch_first=False) are fed (T, N, F) with N fixed: axis 0, which export
# makes dynamic, is then the sequence length.

# --------------------------------------------------------------------------------- every layer
ACTIVATIONS = [
    nf.ReLU(),
    nf.LeakyReLU(0.1),
    nf.PReLU(),
    nf.PReLU(3, init=0.2),
    nf.ELU(0.7),
    nf.CELU(1.3),
    nf.SELU(),
    nf.GELU(),
    nf.GELU("tanh"),
    nf.SiLU(),
    nf.Mish(),
    nf.Softplus(),
    nf.Softplus(beta=2.0, threshold=3.0),
    nf.Softsign(),
    nf.Sigmoid(),
    nf.LogSigmoid(),
    nf.Tanh(),
    nf.Hardtanh(-0.5, 1.5),
    nf.Hardsigmoid(),
    nf.Hardswish(),
    nf.ReLU6(),
    nf.Softmax(dim=1),
    nf.LogSoftmax(),
    nf.Identity(),
    nf.Threshold(0.2, -1.5),
    nf.Hardshrink(0.6),
    nf.Softshrink(0.4),
    nf.Tanhshrink(),
    nf.Softmin(dim=-1),
    nf.Softmin(),
    nf.GLU(dim=2),
]


def pooled(pool, *shape):
    """A maker of (values, per-plane indices) from ``pool`` (return_indices=True) run on
    (n, *shape) inputs: what MaxUnpool takes."""

    def make(n, rng):
        return pool(floats(*shape)(n, rng))

    return make


def _prelu_channels():
    p = nf.PReLU(3)
    p.weight.data[:] = [0.1, -0.2, 0.3]
    return p


def _bn(cls, c):
    bn = cls(c)
    rng = np.random.default_rng(1)
    bn.running_mean[:] = rng.normal(size=c)
    bn.running_var[:] = rng.uniform(0.5, 2.0, size=c)
    bn.weight.data[:] = rng.normal(size=c)
    bn.bias.data[:] = rng.normal(size=c)
    return bn


def _trained(layer, make):
    """A norm layer whose running statistics moved away from (0, 1)."""
    rng = np.random.default_rng(2)
    layer.train()
    for _ in range(3):
        layer(make(8, rng) * 2 + 1)
    return layer


LAYERS = [
    # (id, factory, input maker)
    ("dense", lambda: nf.Dense(5, 4, rng=0), floats(5)),
    ("dense_nobias_3d", lambda: nf.Dense(5, 4, bias=False, rng=0), floats(2, 5)),
    *[(f"act_{i}_{type(a).__name__}", lambda a=a: a, floats(3, 4, scale=3)) for i, a in enumerate(ACTIVATIONS)],
    ("prelu_channels", _prelu_channels, floats(3, 4, scale=3)),
    ("conv1d", lambda: nf.Conv1d(2, 4, 3, stride=2, padding=1, rng=0), floats(2, 9)),
    ("conv1d_same_dil", lambda: nf.Conv1d(2, 4, 4, padding="same", dilation=2, rng=0), floats(2, 9)),
    ("conv2d", lambda: nf.Conv2d(3, 6, 3, stride=(2, 1), padding=1, groups=3, rng=0), floats(3, 7, 6)),
    ("conv2d_reflect", lambda: nf.Conv2d(2, 3, 3, padding=2, padding_mode="reflect", rng=0), floats(2, 6, 5)),
    ("conv2d_replicate", lambda: nf.Conv2d(2, 3, 3, padding=1, padding_mode="replicate", bias=False, rng=0), floats(2, 6, 5)),
    ("conv2d_circular", lambda: nf.Conv2d(2, 3, (3, 2), padding=(1, 2), padding_mode="circular", rng=0), floats(2, 6, 5)),
    ("conv3d", lambda: nf.Conv3d(2, 3, 2, padding=1, rng=0), floats(2, 3, 4, 3)),
    ("convT1d", lambda: nf.ConvTranspose1d(3, 2, 3, stride=2, padding=1, output_padding=1, rng=0), floats(3, 5)),
    ("convT2d", lambda: nf.ConvTranspose2d(4, 2, (3, 2), stride=2, groups=2, dilation=(1, 2), rng=0), floats(4, 3, 4)),
    ("maxpool1d", lambda: nf.MaxPool1d(3, stride=2, padding=1), floats(2, 9)),
    ("maxpool2d", lambda: nf.MaxPool2d(2), floats(2, 6, 6)),
    ("maxpool2d_ceil_dil", lambda: nf.MaxPool2d(3, stride=2, padding=1, dilation=(1, 2), ceil_mode=True), floats(2, 8, 9)),
    ("avgpool1d", lambda: nf.AvgPool1d(2), floats(2, 8)),
    ("avgpool1d_pad", lambda: nf.AvgPool1d(3, stride=2, padding=1, count_include_pad=False), floats(2, 8)),
    ("avgpool2d_ceil", lambda: nf.AvgPool2d(3, stride=2, padding=1, ceil_mode=True), floats(2, 8, 7)),
    ("avgpool2d_divisor", lambda: nf.AvgPool2d(2, divisor_override=3), floats(2, 6, 6)),
    ("adaptive_avg1d", lambda: nf.AdaptiveAvgPool1d(3), floats(2, 7)),
    ("adaptive_avg2d_even", lambda: nf.AdaptiveAvgPool2d((2, 3)), floats(2, 4, 6)),
    ("adaptive_avg2d_global", lambda: nf.AdaptiveAvgPool2d(1), floats(2, 5, 3)),
    ("adaptive_avg2d_uneven", lambda: nf.AdaptiveAvgPool2d((3, None)), floats(2, 5, 4)),
    ("adaptive_max1d", lambda: nf.AdaptiveMaxPool1d(3), floats(2, 7)),
    ("adaptive_max2d_global", lambda: nf.AdaptiveMaxPool2d(1), floats(2, 5, 3)),
    ("adaptive_max2d_even", lambda: nf.AdaptiveMaxPool2d(2), floats(2, 4, 6)),
    ("adaptive_max2d_uneven", lambda: nf.AdaptiveMaxPool2d((3, 4)), floats(2, 5, 7)),
    ("batchnorm1d_2d", lambda: _bn(nf.BatchNorm1d, 4), floats(4)),
    ("batchnorm1d_3d", lambda: _bn(nf.BatchNorm1d, 4), floats(4, 5)),
    ("batchnorm2d", lambda: _bn(nf.BatchNorm2d, 3), floats(3, 4, 4)),
    ("batchnorm3d", lambda: _bn(nf.BatchNorm3d, 2), floats(2, 3, 2, 3)),
    ("batchnorm2d_no_running", lambda: nf.BatchNorm2d(3, track_running_stats=False), floats(3, 4, 4)),
    ("layernorm", lambda: nf.LayerNorm(6), floats(4, 6, scale=3)),
    ("layernorm_2d_noaffine", lambda: nf.LayerNorm((3, 4), elementwise_affine=False), floats(3, 4)),
    ("groupnorm", lambda: nf.GroupNorm(2, 4), floats(4, 3, 3)),
    ("instancenorm1d", lambda: nf.InstanceNorm1d(3, affine=True), floats(3, 7)),
    ("instancenorm2d", lambda: nf.InstanceNorm2d(3), floats(3, 4, 5)),
    ("instancenorm2d_running", lambda: _trained(nf.InstanceNorm2d(3, track_running_stats=True), floats(3, 4, 5)), floats(3, 4, 5)),
    ("rmsnorm", lambda: nf.RMSNorm(6), floats(4, 6)),
    ("dropout", lambda: nf.Dropout(0.5), floats(6)),
    ("dropout1d", lambda: nf.Dropout1d(0.3), floats(3, 6)),
    ("dropout2d", lambda: nf.Dropout2d(0.3), floats(3, 4, 4)),
    ("alphadropout", lambda: nf.AlphaDropout(0.2), floats(6)),
    ("flatten", lambda: nf.Flatten(), floats(2, 3, 4)),
    ("flatten_middle", lambda: nf.Flatten(1, 2), floats(2, 3, 4)),
    ("unflatten", lambda: nf.Unflatten(1, (3, -1)), floats(12)),
    ("reshape", lambda: nf.Reshape(4, -1), floats(3, 8)),
    ("zeropad2d", lambda: nf.ZeroPad2d((1, 2, 0, 3)), floats(2, 3, 4)),
    ("zeropad2d_crop", lambda: nf.ZeroPad2d((-1, 2, 1, -2)), floats(2, 5, 4)),
    ("upsample_nearest", lambda: nf.Upsample(scale_factor=2), floats(2, 3, 4)),
    ("upsample_nearest_size", lambda: nf.Upsample(size=(5, 7)), floats(2, 3, 4)),
    ("upsample_nearest_1d", lambda: nf.Upsample(scale_factor=3), floats(2, 4)),
    ("upsample_bilinear", lambda: nf.Upsample(scale_factor=2, mode="bilinear"), floats(2, 3, 4)),
    ("upsample_bilinear_size", lambda: nf.Upsample(size=(5, 3), mode="bilinear"), floats(2, 3, 4)),
    ("upsample_bilinear_corners", lambda: nf.Upsample(size=(5, 7), mode="bilinear", align_corners=True), floats(2, 3, 4)),
    ("embedding", lambda: nf.Embedding(10, 4, padding_idx=0, rng=0), tokens(5, 10)),
    # issue 14's layers
    ("softmax2d", lambda: nf.Softmax2d(), floats(3, 4, 2, scale=3)),
    ("glu_last", lambda: nf.GLU(), floats(3, 6)),
    ("convT3d", lambda: nf.ConvTranspose3d(4, 2, (2, 3, 2), stride=(2, 1, 2), padding=(0, 1, 0), groups=2, rng=0), floats(4, 2, 3, 2)),
    ("maxpool3d", lambda: nf.MaxPool3d(2, stride=(1, 2, 2), padding=1, ceil_mode=True), floats(2, 4, 5, 4)),
    ("avgpool3d", lambda: nf.AvgPool3d((2, 3, 2), padding=1, count_include_pad=False), floats(2, 4, 5, 4)),
    ("adaptive_avg3d_uneven", lambda: nf.AdaptiveAvgPool3d((3, 2, None)), floats(2, 5, 3, 4)),
    ("adaptive_avg3d_global", lambda: nf.AdaptiveAvgPool3d(1), floats(2, 5, 3, 4)),
    ("adaptive_max3d_uneven", lambda: nf.AdaptiveMaxPool3d((2, 2, 3)), floats(2, 5, 3, 4)),
    ("lppool1d_ceil", lambda: nf.LPPool1d(2, 3, 2, ceil_mode=True), lambda n, rng: rng.uniform(0.5, 2, size=(n, 2, 8)).astype(np.float32)),
    ("lppool2d_p3", lambda: nf.LPPool2d(3, (2, 3), (2, 1)), lambda n, rng: rng.uniform(0.5, 2, size=(n, 2, 5, 6)).astype(np.float32)),
    ("lppool3d_ceil", lambda: nf.LPPool3d(1.5, (2, 1, 3), (1, 2, 2), ceil_mode=True), lambda n, rng: rng.uniform(0.5, 2, size=(n, 2, 3, 4, 6)).astype(np.float32)),
    ("maxpool1d_indices", lambda: nf.MaxPool1d(3, 2, 1, dilation=2, return_indices=True, ceil_mode=True), floats(3, 9)),
    ("maxpool2d_indices", lambda: nf.MaxPool2d((2, 3), (2, 1), (1, 0), return_indices=True, ceil_mode=True), floats(3, 5, 6)),
    ("maxpool3d_indices", lambda: nf.MaxPool3d(2, (1, 2, 2), 1, return_indices=True), floats(2, 3, 4, 5)),
    ("maxunpool1d", lambda: nf.MaxUnpool1d(3, 2, 1), pooled(nf.MaxPool1d(3, 2, 1, return_indices=True), 2, 9)),
    ("maxunpool2d", lambda: nf.MaxUnpool2d(2), pooled(nf.MaxPool2d(2, return_indices=True), 3, 4, 6)),
    ("maxunpool2d_stride_pad", lambda: nf.MaxUnpool2d((3, 2), (2, 1), (1, 0)), pooled(nf.MaxPool2d((3, 2), (2, 1), (1, 0), return_indices=True), 2, 5, 5)),
    ("pixel_shuffle", lambda: nf.PixelShuffle(2), floats(8, 3, 2)),
    ("pixel_shuffle_5d", lambda: nf.PixelShuffle(2), floats(2, 4, 3, 2)),
    ("pixel_unshuffle", lambda: nf.PixelUnshuffle(2), floats(2, 4, 6)),
    ("channel_shuffle", lambda: nf.ChannelShuffle(3), floats(6, 2, 3)),
    ("unfold", lambda: nf.Unfold((2, 3), dilation=(1, 2), padding=1, stride=(2, 1)), floats(3, 5, 7)),
    ("fold", lambda: nf.Fold((5, 7), (2, 3), dilation=(1, 2), padding=1, stride=(2, 1)), floats(18, 15)),
    ("bilinear", lambda: nf.Bilinear(3, 4, 2, rng=0), lambda n, rng: (rng.normal(size=(n, 3)).astype(np.float32), rng.normal(size=(n, 4)).astype(np.float32))),
    ("cosine_similarity", lambda: nf.CosineSimilarity(dim=1), lambda n, rng: (rng.normal(size=(n, 4, 2)).astype(np.float32), rng.normal(size=(n, 4, 2)).astype(np.float32))),
    ("pairwise_distance", lambda: nf.PairwiseDistance(), lambda n, rng: (rng.normal(size=(n, 4)).astype(np.float32), rng.normal(size=(n, 4)).astype(np.float32))),
    ("pairwise_distance_p3_keepdim", lambda: nf.PairwiseDistance(3.0, keepdim=True), lambda n, rng: (rng.normal(size=(n, 4)).astype(np.float32), rng.normal(size=(n, 4)).astype(np.float32))),
    ("upsample_bicubic", lambda: nf.Upsample(scale_factor=2, mode="bicubic"), floats(2, 3, 4)),
    ("upsample_bicubic_corners", lambda: nf.Upsample(size=(5, 7), mode="bicubic", align_corners=True), floats(2, 3, 4)),
    ("upsample_trilinear", lambda: nf.Upsample(scale_factor=(2, 1.5, 2), mode="trilinear"), floats(2, 2, 4, 3)),
    ("upsample_linear", lambda: nf.Upsample(size=7, mode="linear"), floats(2, 4)),
    ("decoder_layer", lambda: nf.TransformerDecoderLayer(8, 2, 16, dropout=0.1, rng=0), lambda n, rng: (rng.normal(size=(n, 4, 8)).astype(np.float32), rng.normal(size=(n, 5, 8)).astype(np.float32))),
    ("decoder_layer_norm_first_seq_first", lambda: nf.TransformerDecoderLayer(8, 2, 16, activation="gelu", batch_first=False, norm_first=True, rng=0), lambda n, rng: (rng.normal(size=(n, 3, 8)).astype(np.float32), rng.normal(size=(n, 3, 8)).astype(np.float32))),
    ("decoder", lambda: nf.TransformerDecoder(nf.TransformerDecoderLayer(8, 2, 16, rng=0), 2, nf.LayerNorm(8)), lambda n, rng: (rng.normal(size=(n, 4, 8)).astype(np.float32), rng.normal(size=(n, 5, 8)).astype(np.float32))),
    ("transformer", lambda: nf.Transformer(8, 2, 1, 2, 16, rng=0), lambda n, rng: (rng.normal(size=(n, 5, 8)).astype(np.float32), rng.normal(size=(n, 4, 8)).astype(np.float32))),
    ("embedding_max_norm", lambda: nf.Embedding(10, 4, max_norm=1.0, rng=0), tokens(5, 10)),
    ("embeddingbag_mean", lambda: nf.EmbeddingBag(10, 4, rng=0), tokens(5, 10)),
    ("embeddingbag_sum_pad", lambda: nf.EmbeddingBag(10, 4, mode="sum", padding_idx=1, rng=0), tokens(5, 4)),
    ("embeddingbag_max_pad", lambda: nf.EmbeddingBag(10, 4, mode="max", padding_idx=1, rng=0), tokens(5, 4)),
    ("rnn_tanh", lambda: nf.RNN(3, 4, rng=0), floats(5, 3)),
    ("rnn_relu_2layer_bi", lambda: nf.RNN(3, 4, nonlinearity="relu", num_layers=2, bidirectional=True, rng=0), floats(5, 3)),
    ("lstm", lambda: nf.LSTM(3, 4, rng=0), floats(5, 3)),
    ("lstm_2layer_bi", lambda: nf.LSTM(3, 4, num_layers=2, bidirectional=True, rng=0), floats(5, 3)),
    ("lstm_time_major_nobias", lambda: nf.LSTM(3, 4, bias=False, batch_first=False, rng=0), lambda n, rng: rng.normal(size=(n, 3, 3)).astype(np.float32)),
    ("gru", lambda: nf.GRU(3, 4, rng=0), floats(5, 3)),
    ("gru_3layer_bi", lambda: nf.GRU(3, 4, num_layers=3, bidirectional=True, dropout=0.3, rng=0), floats(5, 3)),
    # an initial state (L, N, H) has the batch on axis 1: the batch is fixed, the sequence varies
    ("gru_h0", lambda: nf.GRU(3, 4, num_layers=2, batch_first=False, rng=0), lambda n, rng: (rng.normal(size=(n, 3, 3)).astype(np.float32), rng.normal(size=(2, 3, 4)).astype(np.float32))),
    ("rnncell", lambda: nf.RNNCell(3, 4, rng=0), floats(3)),
    ("grucell", lambda: nf.GRUCell(3, 4, rng=0), lambda n, rng: (rng.normal(size=(n, 3)).astype(np.float32), rng.normal(size=(n, 4)).astype(np.float32))),
    ("lstmcell", lambda: nf.LSTMCell(3, 4, rng=0), floats(3)),
    ("mha", lambda: nf.MultiheadAttention(8, 2, rng=0), floats(5, 8)),
    ("mha_cross", lambda: nf.MultiheadAttention(8, 4, kdim=3, vdim=5, bias=False, rng=0), lambda n, rng: tuple(rng.normal(size=(n, *s)).astype(np.float32) for s in ((4, 8), (6, 3), (6, 5)))),
    ("mha_time_major", lambda: nf.MultiheadAttention(8, 2, batch_first=False, rng=0), lambda n, rng: rng.normal(size=(n, 3, 8)).astype(np.float32)),
    ("encoder_layer", lambda: nf.TransformerEncoderLayer(8, 2, 16, dropout=0.1, rng=0), floats(5, 8)),
    ("encoder_layer_norm_first_gelu", lambda: nf.TransformerEncoderLayer(8, 2, 16, activation="gelu", norm_first=True, batch_first=False, rng=0), lambda n, rng: rng.normal(size=(n, 3, 8)).astype(np.float32)),
    ("encoder", lambda: nf.TransformerEncoder(nf.TransformerEncoderLayer(8, 2, 16, rng=0), 2, norm=nf.LayerNorm(8)), floats(5, 8)),
    ("positional_encoding", lambda: nf.PositionalEncoding(8, max_len=10), floats(5, 8)),
    ("sequential", lambda: nf.Sequential(nf.Dense(4, 6, rng=0), nf.Tanh(), nf.Dense(6, 2, rng=1)), floats(4)),
    ("concat", lambda: nf.Concat(nf.Dense(4, 3, rng=0), nf.Sequential(nf.Dense(4, 5, rng=1), nf.ReLU())), floats(4)),
    ("concat_channels", lambda: nf.Concat(nf.Conv2d(2, 3, 1, rng=0), nf.Conv2d(2, 1, 3, padding=1, rng=1), axis=1), floats(2, 4, 4)),
    ("add", lambda: nf.Add(nf.Dense(4, 3, rng=0), nf.Dense(4, 3, rng=1), nf.Dense(4, 3, rng=2)), floats(4)),
    ("residual", lambda: nf.Residual(nf.Sequential(nf.Dense(4, 4, rng=0), nf.Tanh())), floats(4)),
    ("residual_projection", lambda: nf.Residual(nf.Dense(4, 6, rng=0), nf.Dense(4, 6, rng=1)), floats(4)),
]  # fmt: skip


@pytest.mark.parametrize("factory, make", [c[1:] for c in LAYERS], ids=[c[0] for c in LAYERS])
def test_layer_matches_onnxruntime(factory, make):
    run_both(factory(), make)


def test_every_exportable_layer_is_tested():
    tested = {type(factory()) for _, factory, _ in LAYERS}
    # the merges, selections and nf.Model itself are tested inside the graph models below
    tested |= {type(m) for _, factory, _ in GRAPH_MODELS for m in factory().modules()}
    missing = sorted(
        c.__name__ for c in _EXPORTERS if c.__module__.startswith("nnframe") and c not in tested
    )
    assert not missing, f"exporters without a test case: {missing}"


# Public modules with no ONNX export, and why.
NOT_EXPORTABLE = {
    nf.ModuleList: "no forward of its own (iterated in the user's forward)",
    nf.ModuleDict: "no forward of its own",
    nf.Module: "the abstract base",
}


def test_every_public_layer_has_an_exporter():
    public = [
        obj
        for name in nf.__all__
        if inspect.isclass(obj := getattr(nf, name)) and issubclass(obj, nf.Module)
    ]
    missing = [c.__name__ for c in public if c not in _EXPORTERS and c not in NOT_EXPORTABLE]
    assert not missing, f"public layers with no ONNX exporter: {missing}"


# --------------------------------------------------------------------------------- whole models
class LSTMClassifier(nf.Module):
    """Embedding -> 2-layer bidirectional LSTM -> the last layer's final states -> Dense."""

    def __init__(self):
        super().__init__()
        self.embed = nf.Embedding(20, 8, padding_idx=0, rng=0)
        self.lstm = nf.LSTM(8, 6, num_layers=2, bidirectional=True, rng=1)
        self.head = nf.Dense(12, 3, rng=2)

    def forward(self, tokens):
        _, (h_n, _) = self.lstm(self.embed(tokens))
        return self.head(np.concatenate([h_n[-2], h_n[-1]], axis=1))


@register_exporter(LSTMClassifier)
def _export_lstm_classifier(ctx, m, tokens):
    _, (h_n, _) = ctx.convert(m.lstm, ctx.convert(m.embed, tokens, name="embed"), name="lstm")
    # h_n (L * D, N, H): the last two rows side by side -> (N, 2H)
    last = ctx.slice(h_n.name, [-2], [np.iinfo(np.int64).max], [0])
    features = ctx.reshape(ctx.transpose(last, (1, 0, 2)), [0, -1])
    example = np.concatenate([h_n.value[-2], h_n.value[-1]], axis=1)
    return ctx.convert(m.head, Value(features, example), name="head").name


class TransformerClassifier(nf.Module):
    def __init__(self):
        super().__init__()
        self.embed = nf.Embedding(30, 16, rng=0)
        self.pos = nf.PositionalEncoding(16, max_len=32)
        layer = nf.TransformerEncoderLayer(16, 4, 32, dropout=0.1, rng=1)
        self.encoder = nf.TransformerEncoder(layer, 2, norm=nf.LayerNorm(16))
        self.pool = nf.Sequential(nf.Reshape(1, 7, 16), nf.AdaptiveAvgPool2d((1, 16)), nf.Flatten())
        self.head = nf.Dense(16, 4, rng=2)

    def forward(self, tokens):
        return self.head(self.pool(self.encoder(self.pos(self.embed(tokens)))))


@register_exporter(TransformerClassifier)
def _export_transformer_classifier(ctx, m, tokens):
    x = tokens
    for name in ("embed", "pos", "encoder", "pool", "head"):
        x = ctx.convert(getattr(m, name), x, name=name)
    return x.name


MODELS = [
    ("mlp", lambda: nf.Sequential(nf.Dense(10, 32, rng=0), nf.ReLU(), nf.Dropout(0.2), nf.Dense(32, 32, rng=1), nf.GELU(), nf.Dense(32, 3, rng=2), nf.Softmax()), floats(10)),
    ("cnn", lambda: nf.Sequential(
        nf.Conv2d(1, 8, 3, padding=1, rng=0), _trained(nf.BatchNorm2d(8), floats(8, 8, 8)), nf.ReLU(), nf.MaxPool2d(2),
        nf.Residual(nf.Sequential(nf.Conv2d(8, 8, 3, padding=1, rng=1), nf.SiLU())),
        nf.Conv2d(8, 16, 3, stride=2, padding=1, rng=2), nf.GroupNorm(4, 16), nf.ReLU(),
        nf.AdaptiveAvgPool2d(1), nf.Flatten(), nf.Dropout(0.3), nf.Dense(16, 10, rng=3)), floats(1, 8, 8)),
    ("lstm_classifier", LSTMClassifier, tokens(7, 20)),
    ("transformer_encoder", TransformerClassifier, tokens(7, 30)),
]  # fmt: skip


@pytest.mark.parametrize("factory, make", [c[1:] for c in MODELS], ids=[c[0] for c in MODELS])
def test_model_matches_onnxruntime(factory, make):
    run_both(factory(), make)


def test_demo_model_round_trip(tmp_path):
    from nnframe.demo import build_model

    model = build_model("cnn", np.random.default_rng(0))
    path = tmp_path / "digits.onnx"
    proto = export(model, np.zeros((1, 1, 8, 8), np.float32), path)
    assert onnx.load(path) == proto
    run_both(model, floats(1, 8, 8))


# --------------------------------------------------------------------------------- graph models
def two_tower():
    """Users and items embedded by two towers; their dot product plus an MLP on the
    concatenation (dict inputs, dict outputs: rating and liked)."""
    u_in = nf.Input((), dtype=np.int64, name="user")
    i_in = nf.Input((), dtype=np.int64, name="item")
    u, v = nf.Embedding(10, 8, rng=0)(u_in), nf.Embedding(12, 8, rng=1)(i_in)
    both = nf.Concatenate()(u, v)
    mlp = nf.Dense(16, 1, rng=3)(nf.ReLU()(nf.Dense(16, 16, rng=2)(both)))
    score = nf.Add()(nf.Dot(axes=1)(u, v), mlp, name="rating")
    like = nf.Dense(16, 2, rng=4)(both, name="liked")
    return nf.Model({"user": u_in, "item": i_in}, {"rating": score, "liked": like})


def users_items(n, rng):
    return rng.integers(0, 10, size=n), rng.integers(0, 12, size=n)


def skip_dag():
    """A DAG with a skip concatenation, a shared layer called twice, a nested graph model,
    and every element-wise merge."""
    x = nf.Input((6,), name="x")
    h = nf.Tanh()(nf.Dense(6, 6, rng=0)(x))
    shared = nf.Dense(6, 6, rng=1)
    a, b = shared(h), shared(x)  # one weight, two calls
    inner_in = nf.Input((6,), name="inner")
    inner = nf.Model(inner_in, nf.Sigmoid()(nf.Dense(6, 6, rng=2)(inner_in)), name="gate")
    g = inner(a)
    merged = [
        nf.Add()(a, b, g),
        nf.Multiply()(a, g, b),
        nf.Subtract()(a, b),
        nf.Average()([a, b, g]),
        nf.Maximum()(a, b, g),
    ]
    skip = nf.Concatenate()([*merged, x])  # the input skips every layer
    return nf.Model(x, nf.Dense(36, 3, rng=3)(skip, name="out"))


def two_outputs():
    """A class head and a regression head (list outputs) on one trunk; cosine similarity
    (Dot with normalize) between the trunk and the input as a feature."""
    x = nf.Input((5,), name="features")
    trunk = nf.ReLU()(nf.Dense(5, 5, rng=0)(x))
    cos = nf.Dot(axes=-1, normalize=True)(trunk, x)
    both = nf.Concatenate(axis=1)(trunk, cos)
    return nf.Model(x, [nf.Dense(6, 3, rng=1)(both, name="cls"), nf.Dense(6, 1, rng=2)(both)])


def lstm_time_step():
    """Embedding -> bidirectional LSTM with lengths -> the last valid step -> Dense, next to the
    final hidden state (a tuple output indexed in the graph)."""
    ids = nf.Input((None,), dtype=np.int64, name="tokens")
    lens = nf.Input((), dtype=np.int64, name="lengths")
    emb = nf.Embedding(20, 8, padding_idx=0, rng=0)(ids)
    seq, (h_n, _) = nf.LSTM(8, 6, bidirectional=True, rng=1)(emb, lengths=lens)
    last = nf.TimeStep(-1)(seq, lengths=lens)
    first = nf.TimeStep(0)(seq, lengths=lens)
    hidden = nf.GetItem(-1)(h_n)  # the backward direction's final state
    features = nf.Concatenate()(last, first, hidden)
    return nf.Model([ids, lens], nf.Dense(30, 2, rng=2)(features, name="logits"))


def tokens_lengths(n, rng, T=7):
    return rng.integers(1, 20, size=(n, T)), rng.integers(1, T + 1, size=n)


def sequential_selections():
    """Sequence layers in Sequential: GetItem of the tuple output, TimeStep without lengths."""
    return nf.Sequential(
        nf.Embedding(20, 8, rng=0),
        nf.GRU(8, 6, num_layers=2, rng=1),
        nf.GetItem(0),
        nf.TimeStep(-2),
        nf.Dense(6, 2, rng=2),
    )


def lstm_state_and_gru_lengths():
    """GetItem(1, 0, -1) (the LSTM's last-layer final hidden state) in Sequential inside a
    graph, next to the step before the last valid one of a 2-layer GRU given lengths (zeros
    for a sequence of length 1)."""
    ids = nf.Input((None,), dtype=np.int64, name="tokens")
    lens = nf.Input((), dtype=np.int64, name="lengths")
    emb = nf.Embedding(20, 4, rng=0)(ids)
    state = nf.Sequential(nf.LSTM(4, 5, num_layers=2, rng=1), nf.GetItem(1, 0, -1))(emb)
    seq, _ = nf.GRU(4, 5, num_layers=2, rng=2)(emb, lengths=lens)
    before_last = nf.TimeStep(-2)(seq, lengths=lens)
    return nf.Model([ids, lens], nf.Concatenate()(state, before_last))


def time_major_steps():
    x = nf.Input((3, 4), name="seq")  # (T, N, F) fed time-major: axis 0 is the sequence
    out, h = nf.GRU(4, 5, batch_first=False, rng=0)(x)
    step = nf.TimeStep(-1, batch_first=False)(out)
    pairs = nf.Dot(axes=2)(nf.Dense(5, 5, rng=1)(out), out)  # (T, N, N)
    return nf.Model(x, [step, nf.GetItem(0)(h), pairs])


def three_d_dot():
    a, b = nf.Input((4, 3), name="a"), nf.Input((5, 3), name="b")
    return nf.Model([a, b], nf.Dot(axes=(2, 2), normalize=True)(a, b))


def pool_unpool():
    """MaxPool2d's indices (return_indices=True) feed MaxUnpool2d after a convolution of the
    pooled values; output_size restores the odd input size (5, 7) the default (4, 6) misses."""
    x = nf.Input((2, 5, 7), name="img")
    y, idx = nf.MaxPool2d(2, return_indices=True)(x)
    h = nf.Conv2d(2, 2, 1, rng=0)(y)
    return nf.Model(x, nf.MaxUnpool2d(2)(h, idx, output_size=(5, 7)))


GRAPH_MODELS = [
    ("two_tower", two_tower, users_items),
    ("skip_dag", skip_dag, lambda n, rng: (floats(6)(n, rng),)),
    ("two_outputs", two_outputs, lambda n, rng: (floats(5)(n, rng),)),
    ("lstm_time_step", lstm_time_step, tokens_lengths),
    ("sequential_selections", sequential_selections, tokens(6, 20)),
    ("lstm_state_gru_lengths", lstm_state_and_gru_lengths, tokens_lengths),
    ("time_major", time_major_steps, lambda n, rng: (floats(3, 4)(n, rng),)),
    ("pool_unpool", pool_unpool, lambda n, rng: (floats(2, 5, 7)(n, rng),)),
    ("dot_3d", three_d_dot, lambda n, rng: (floats(4, 3)(n, rng), floats(5, 3)(n, rng))),
]


@pytest.mark.parametrize(
    "factory, make", [c[1:] for c in GRAPH_MODELS], ids=[c[0] for c in GRAPH_MODELS]
)
def test_graph_model_matches_onnxruntime(factory, make):
    model = factory()
    abs_err, rel_err = run_both(model, make)
    assert abs_err < 1e-5  # reported in docs/graph-models.md


def test_graph_model_names_and_dict_example():
    model = two_tower()
    proto = export(model, {"item": np.arange(3), "user": np.arange(3)})
    assert [i.name for i in proto.graph.input] == ["user", "item"]
    assert [o.name for o in proto.graph.output] == ["rating", "liked"]
    assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # the shared Dense of skip_dag is one weight and one bias
    dag = export(skip_dag(), np.ones((2, 6), np.float32))
    sizes = sorted(int(np.prod(t.dims)) for t in dag.graph.initializer if len(t.dims) == 2)
    assert sizes == [36, 36, 36, 108]  # dense, shared, gate's dense, out
    renamed = export(model, users_items(2, np.random.default_rng(0)), output_names=["r", "l"])
    assert [o.name for o in renamed.graph.output] == ["r", "l"]


def test_graph_with_an_unexportable_layer_names_it():
    x = nf.Input((3,), name="x")
    model = nf.Model(x, Cube()(nf.Dense(3, 3, rng=0)(x)))
    with pytest.raises(UnsupportedLayerError, match=r"no ONNX exporter for Cube"):
        export(model, np.ones((2, 3), np.float32))


# --------------------------------------------------------------------------------- the API
def test_training_flags_are_restored_and_weights_untouched():
    model = nf.Sequential(nf.Dense(3, 3, rng=0), nf.Dropout(0.5), _bn(nf.BatchNorm1d, 3))
    model.train()
    model[2].eval()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    export(model, np.ones((2, 3), np.float32))
    assert [m.training for m in model.modules()] == [True, True, True, False]
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_names_opset_and_static_batch():
    model = nf.Sequential(nf.Dense(3, 2, rng=0), nf.LayerNorm(2))
    proto = export(
        model,
        np.ones((4, 3), np.float32),
        opset=18,
        dynamic_batch=False,
        input_names=["features"],
        output_names=["scores"],
    )
    assert [i.name for i in proto.graph.input] == ["features"]
    assert [o.name for o in proto.graph.output] == ["scores"]
    assert proto.opset_import[0].version == 18
    dims = [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert dims == [4, 2]
    dyn = export(model, np.ones((4, 3), np.float32))
    assert dyn.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert dyn.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    with pytest.raises(ValueError, match="opset"):
        export(model, np.ones((4, 3), np.float32), opset=12)
    with pytest.raises(ValueError, match="expected 1 output name"):
        export(model, np.ones((4, 3), np.float32), output_names=["a", "b"])


@pytest.mark.parametrize("opset", [18, 20])
def test_later_opsets(opset):
    model = nf.Sequential(nf.Dense(4, 6, rng=0), nf.GELU(), nf.LayerNorm(6), nf.Dense(6, 2, rng=1))
    run_both(model, floats(4), opset=opset)
    run_both(nf.Sequential(nf.GroupNorm(2, 4), nf.AdaptiveMaxPool1d(3)), floats(4, 7), opset=opset)


def test_tied_weights_are_one_initializer():
    shared = nf.Dense(4, 4, rng=0)
    proto = export(nf.Sequential(shared, nf.Tanh(), shared), np.ones((2, 4), np.float32))
    assert len(proto.graph.initializer) == 2  # one weight, one bias


def test_writes_a_file_onnxruntime_serves(tmp_path):
    model = nf.Sequential(nf.Dense(3, 2, rng=0))
    path = tmp_path / "model.onnx"
    export(model, np.ones((1, 3), np.float32), str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(session.run(None, {"input": x})[0], model(x), rtol=RTOL, atol=ATOL)


class Cube(nf.Module):
    """A custom layer: x^3."""

    def forward(self, x):
        self.save_for_backward(x)
        return x**3

    def backward(self, grad_output):
        (x,) = self.saved
        return grad_output * 3 * x**2


def test_unsupported_layer_error_names_it():
    model = nf.Sequential(nf.Dense(3, 3, rng=0), Cube())
    with pytest.raises(UnsupportedLayerError, match=r"Cube\(\).*no ONNX exporter for Cube"):
        export(model, np.ones((2, 3), np.float32))
    with pytest.raises(UnsupportedLayerError, match="proj_size"):
        export(nf.LSTM(3, 4, proj_size=2, rng=0), np.ones((2, 5, 3), np.float32))
    assert isinstance(UnsupportedLayerError("x"), TypeError)


def test_custom_layer_exporter_registration():
    class Scaled(nf.Module):
        def __init__(self):
            super().__init__()
            self.gamma = nf.Parameter(np.array([1.0, -2.0, 0.5], dtype=np.float32))

        def forward(self, x):
            return Cube()(x) * self.gamma.data

    def export_cube(ctx, module, x):
        return ctx.node("Pow", [x.name, ctx.scalar(3.0, x)])

    assert register_exporter(Cube, export_cube) is export_cube
    try:

        @register_exporter(Scaled)
        def export_scaled(ctx, module, x):
            cubed = ctx.convert(Cube(), x, name="cube")
            return ctx.node("Mul", [cubed.name, ctx.param(module.gamma.data, "gamma")])

        run_both(nf.Sequential(nf.Dense(3, 3, rng=0), Scaled()), floats(3))
    finally:
        _EXPORTERS.pop(Cube, None)
        _EXPORTERS.pop(Scaled, None)
    with pytest.raises(TypeError, match="expected a class"):
        register_exporter(Cube(), export_cube)


def test_import_nnframe_does_not_import_onnx():
    code = "import sys, nnframe, nnframe.onnx; assert 'onnx' not in sys.modules, 'onnx imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
