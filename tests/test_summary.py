"""summary(model, input_shape): shapes, parameter counts, FLOPs and memory estimates, totals."""

import numpy as np
import pytest

import nnframe as nf

CHECKED_MODULES = []  # no Module or Loss here


def test_summary_of_an_mlp_worked_example():
    model = nf.Sequential(nf.Dense(4, 8, rng=0), nf.ReLU(), nf.Dense(8, 2, rng=1))
    model[2].bias.requires_grad = False
    s = nf.summary(model, (4,), batch_size=3)
    assert [r.kind for r in s.rows] == ["Dense", "ReLU", "Dense"]
    assert [r.output_shape for r in s.rows] == [("N", 8), ("N", 8), ("N", 2)]
    assert (s.rows[0].trainable, s.rows[0].frozen) == (40, 0)
    assert (s.rows[2].trainable, s.rows[2].frozen) == (16, 2)
    assert (s.total_params, s.trainable_params, s.frozen_params) == (58, 56, 2)
    # Dense: 2 * in * out multiply-adds per row + the bias adds; ReLU: one op per element
    assert s.rows[0].flops == 2 * 4 * 8 * 3 + 8 * 3
    assert s.rows[1].flops == 8 * 3
    assert s.rows[0].activation_bytes == 3 * 8 * 4  # float32
    assert s.total_flops == sum(r.flops for r in s.rows)
    assert s.parameter_bytes == 58 * 4
    text = str(s)
    assert "Total params: 58" in text and "Frozen params: 2" in text and "(N, 8)" in text


def test_summary_restores_mode_and_saved_state_and_prints_nothing(capsys):
    model = nf.Sequential(nf.Dense(3, 3, rng=0), nf.Tanh())
    x = np.ones((2, 3), np.float32)
    out = model(x)
    model.train()
    nf.summary(model, (3,), batch_size=5)
    assert model.training and "forward" not in vars(model[0])
    grad = model.backward(np.ones_like(out))  # backward still uses the batch of 2
    assert grad.shape == (2, 3)
    assert capsys.readouterr().out == ""


def test_summary_of_nested_containers_and_a_bare_layer():
    inner = nf.Sequential(nf.Dense(4, 4, rng=0), nf.Sigmoid())
    model = nf.Sequential(inner, nf.Dense(4, 1, rng=1))
    s = nf.summary(model, (4,))
    kinds = [(r.kind, r.depth) for r in s.rows]
    assert kinds == [("Sequential", 0), ("Dense", 1), ("Sigmoid", 1), ("Dense", 0)]
    assert s.total_params == 20 + 5
    bare = nf.summary(nf.Dense(3, 2, rng=0), (3,))
    assert len(bare.rows) == 1 and bare.rows[0].trainable == 8


def test_summary_of_a_cnn_counts_convolution_flops():
    if not hasattr(nf, "Conv2d"):
        pytest.skip("convolution layers are not in this checkout")
    model = nf.Sequential(
        nf.Conv2d(1, 4, 3, padding=1, rng=0), nf.Flatten(), nf.Dense(64, 2, rng=0)
    )
    s = nf.summary(model, (1, 4, 4), batch_size=2)
    assert s.rows[0].output_shape == ("N", 4, 4, 4)
    # each of the 2*4*4*4 outputs costs 9 multiply-adds (1 channel, 3x3) plus the bias add
    assert s.rows[0].flops == 2 * 9 * (2 * 4 * 4 * 4) + 2 * 4 * 4 * 4


def test_summary_with_an_explicit_input_and_errors():
    model = nf.Sequential(nf.Dense(3, 2, rng=0))
    s = nf.summary(model, input=np.zeros((7, 3), np.float32))
    assert s.batch_size == 7 and s.input_shape == (3,)
    with pytest.raises(TypeError, match=r"summary: expected input_shape or input, got neither"):
        nf.summary(model)
    with pytest.raises(TypeError, match=r"summary: expected a Module, got list"):
        nf.summary([], (3,))


def test_summary_of_a_layer_with_several_outputs():
    if not hasattr(nf, "LSTM"):
        pytest.skip("recurrent layers are not in this checkout")
    model = nf.Sequential(nf.Embedding(20, 8), nf.LSTM(8, 16, batch_first=True))
    s = nf.summary(model, input=np.zeros((2, 5), dtype=np.int64))
    lstm = s.rows[1]
    assert lstm.output_shape == ("N", 5, 16)  # the output proper, not the (h, c) states
    assert lstm.activation_bytes == (2 * 5 * 16 + 2 * 2 * 16) * 4  # output, h and c
    assert s.rows[0].flops == 0  # a lookup
    assert lstm.flops == 2 * lstm.trainable * 2 * 5  # 2 * parameters per (sample, step)


def test_summary_of_an_embedding_first_model_needs_no_dtype():
    model = nf.Sequential(nf.Embedding(20, 8), nf.Dense(8, 2, rng=0))
    s = nf.summary(model, (5,), batch_size=3)  # the zero batch is int64 indices, not floats
    assert s.input_shape == (5,)
    assert [r.output_shape for r in s.rows] == [("N", 5, 8), ("N", 5, 2)]
    assert s.rows[0].flops == 0  # a lookup
    bag = nf.summary(nf.EmbeddingBag(10, 4, mode="mean"), (6,), batch_size=2)
    assert bag.rows[0].output_shape == ("N", 4)
    floats = nf.summary(nf.Sequential(nf.Dense(3, 2, rng=0)), (3,))  # others keep the model's
    assert floats.rows[0].activation_bytes == 2 * 4


def test_summary_marks_custom_layer_flops_unknown():
    class Scale(nf.Module):
        def __init__(self, features):
            super().__init__()
            self.gamma = nf.Parameter(np.ones(features, dtype=np.float32))

        def forward(self, x):
            return x * self.gamma.data

    class Twice(nf.Module):  # no parameters: still not ours to guess
        def forward(self, x):
            return x * 2

    model = nf.Sequential(nf.Dense(4, 8, rng=0), Scale(8), Twice())
    s = nf.summary(model, (4,), batch_size=3)
    assert [r.flops for r in s.rows] == [2 * 4 * 8 * 3 + 8 * 3, None, None]
    assert s.total_flops == 2 * 4 * 8 * 3 + 8 * 3  # the known layers only
    assert s.unknown_flops == ["1 (Scale)", "2 (Twice)"]
    text = str(s)
    assert "+ unknown for 2 custom layers (1 (Scale), 2 (Twice))" in text
    assert [line.split()[-3] for line in text.splitlines() if "(Scale)" in line][0] == "?"
