"""Graph models: recording, forward/backward against Sequential and by finite differences
(fan-out, shared layers, tuple outputs, nested models, random DAGs), structures of inputs and
outputs, and the errors at construction."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnframe as nf
from tests.strategies import normal_array, seeds, small

CHECKED_MODULES = [nf.Model]


def test_a_chain_equals_the_same_sequential():
    seq = nf.Sequential(nf.Dense(6, 8, rng=0), nf.ReLU(), nf.Dense(8, 3, rng=1))
    x = nf.Input((6,))
    h = x
    for layer in seq:
        h = layer(h)
    graph = nf.Model(x, h)
    assert [n for n, _ in graph.named_parameters()] == [
        "dense.weight", "dense.bias", "dense_1.weight", "dense_1.bias",
    ]  # fmt: skip
    data = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    g = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    out_s = seq(data)
    gx_s = seq.backward(g)
    grads_s = [p.grad.copy() for p in seq.parameters()]
    seq.zero_grad()
    np.testing.assert_array_equal(graph(data), out_s)
    np.testing.assert_array_equal(graph.backward(g), gx_s)
    for p, want in zip(graph.parameters(), grads_s):
        np.testing.assert_array_equal(p.grad, want)


def test_shapes_propagate_with_free_axes():
    ids = nf.Input((None,), dtype=np.int64, name="ids")
    emb = nf.Embedding(10, 4, rng=0)(ids)
    out, (h, c) = nf.LSTM(4, 5, num_layers=2, rng=1)(emb)
    assert ids.shape == (None, None) and emb.shape == (None, None, 4)
    assert out.shape == (None, None, 5) and h.shape == (2, None, 5) and c.dtype == np.float32
    assert nf.Dense(5, 2)(nf.TimeStep()(out)).shape == (None, 2)


def test_fan_out_and_shared_layers_gradcheck():
    x = nf.Input((3,))
    shared = nf.Dense(4, 4, rng=1)
    h = nf.Tanh()(nf.Dense(3, 4, rng=0)(x))
    a = shared(h)  # the shared layer, first call
    b = shared(nf.Tanh()(a))  # and again on its own output
    y = nf.Add()(a, b, h)  # h feeds three calls
    model = nf.Model(x, [y, nf.Dense(4, 2, rng=2)(b)])
    nf.check_module(model, normal_array(0, (5, 3)), expected_shape=((5, 4), (5, 2)))


def test_shared_call_without_gradient_keeps_the_entries_aligned():
    """The second output gets no gradient: the shared layer's call behind it still runs
    backward (with zeros), so the first call's backward uses the first call's input."""
    x1, x2 = nf.Input((3,)), nf.Input((3,))
    enc = nf.Dense(3, 2, rng=0)
    model = nf.Model([x1, x2], [enc(x1), enc(x2)])
    a, b = normal_array(0, (4, 3)).astype(np.float32), normal_array(1, (4, 3)).astype(np.float32)
    model(a, b)
    g = np.ones((4, 2), dtype=np.float32)
    ga, gb = model.backward((g, None))
    np.testing.assert_allclose(enc.weight.grad, g.T @ a, rtol=1e-6)
    np.testing.assert_allclose(ga, g @ enc.weight.data, rtol=1e-6)
    np.testing.assert_array_equal(gb, np.zeros_like(b))


def test_siamese_encoder_gets_the_sum_of_both_calls():
    x1, x2 = nf.Input((5,), name="left"), nf.Input((5,), name="right")
    enc = nf.Sequential(nf.Dense(5, 4, rng=0), nf.Tanh())
    d = nf.Subtract()(enc(x1), enc(x2))
    model = nf.Model([x1, x2], nf.Dense(4, 1, rng=1)(nf.Multiply()(d, d)))
    assert len(model.parameters()) == 4
    nf.check_module(model, (normal_array(0, (3, 5)), normal_array(1, (3, 5))))


def test_tuple_outputs_lengths_and_integer_inputs():
    ids = nf.Input((None,), dtype=np.int64, name="ids")
    lengths = nf.Input((), dtype=np.int64, name="lengths")
    emb = nf.Embedding(20, 6, rng=0)(ids)
    seq, (h, c) = nf.LSTM(6, 7, rng=1)(emb, lengths=lengths)
    last = nf.TimeStep()(seq, lengths=lengths)
    both = nf.Concatenate()(last, nf.GetItem(-1)(h), nf.GetItem(-1)(c))
    model = nf.Model([ids, lengths], nf.Dense(21, 2, rng=2)(both))
    rng = np.random.default_rng(0)
    x, n = rng.integers(0, 20, size=(4, 6)), np.array([6, 3, 1, 4])
    assert model(x, n).shape == (4, 2)
    assert model.backward(np.ones((4, 2), np.float32)) == (None, None)  # integer inputs
    nf.check_module(model, (x, n))


def test_a_whole_tuple_node_feeds_a_layer():
    """The LSTM's state tuple (h, c) as the initial state of a second LSTM (a seq2seq
    encoder-decoder), and a tuple node taken apart by GetItem."""
    src, tgt = nf.Input((None, 3)), nf.Input((None, 3))
    _, state = nf.LSTM(3, 4, rng=0)(src)
    dec, _ = nf.LSTM(3, 4, rng=1)(tgt, state)
    h_n = nf.GetItem(0, -1)(state)
    model = nf.Model([src, tgt], [nf.Dense(4, 2, rng=2)(dec), h_n])
    nf.check_module(model, (normal_array(0, (2, 5, 3)), normal_array(1, (2, 4, 3))))


def test_nested_models_in_a_graph_and_in_sequential():
    x = nf.Input((4,))
    inner = nf.Model(x, nf.Tanh()(nf.Dense(4, 4, rng=0)(x)), name="block")
    y = nf.Input((4,))
    outer = nf.Model(y, nf.Add()(inner(y), inner(inner(y))))  # shared three times
    nf.check_module(outer, normal_array(0, (3, 4)))
    nf.check_module(nf.Sequential(inner, nf.Dense(4, 2, rng=1), outer if False else nf.Tanh()),
                    normal_array(1, (3, 4)))  # fmt: skip
    seq = nf.Sequential(nf.Dense(4, 4, rng=2), outer)
    nf.check_module(seq, normal_array(2, (3, 4)))


def test_dict_inputs_and_outputs():
    a, b = nf.Input((3,), name="a"), nf.Input((2,), name="b")
    h = nf.Concatenate()(a, b)
    model = nf.Model(
        {"a": a, "b": b}, {"sum": nf.Dense(5, 1, rng=0)(h), "cls": nf.Dense(5, 3, rng=1)(h)}
    )
    assert model.input_names == ["a", "b"] and model.output_names == ["sum", "cls"]
    xa, xb = np.ones((4, 3), np.float32), np.ones((4, 2), np.float32)
    out = model({"b": xb, "a": xa})
    assert list(out) == ["sum", "cls"] and out["cls"].shape == (4, 3)
    grads = model.backward({"cls": np.ones((4, 3), np.float32)})  # no gradient for "sum"
    assert set(grads) == {"a", "b"} and grads["a"].shape == (4, 3)
    out2 = model(xa, xb)  # positional, in input order
    np.testing.assert_array_equal(out2["sum"], out["sum"])
    assert isinstance(model.backward((None, np.ones((4, 3), np.float32))), tuple)


def test_list_output_names_come_from_layer_names():
    x = nf.Input((3,), name="x")
    h = nf.Dense(3, 4, rng=0)(x)
    model = nf.Model(x, [nf.Dense(4, 1, rng=1)(h, name="price"), nf.Dense(4, 2, rng=2)(h), x])
    assert model.output_names == ["price", "dense_1", "x"]
    assert list(model.layers) == ["dense", "price", "dense_1"]


def test_needs_input_grad_false_skips_the_first_layers_input_product():
    x = nf.Input((3,))
    model = nf.Model(x, nf.Dense(3, 2, rng=0)(x))
    model(np.ones((2, 3), np.float32))
    model.needs_input_grad = False
    assert model.backward(np.ones((2, 2), np.float32)) is None
    assert model.layers["dense"].needs_input_grad  # restored after the call


def test_backward_error_names_the_node():
    x = nf.Input((3,))
    model = nf.Model(x, nf.Dense(3, 2, rng=0)(nf.Dense(3, 3, rng=1)(x)))
    model(np.ones((2, 3), np.float32))
    with pytest.raises(
        nf.ShapeError, match=r"output 'dense_1' of its shape \(2, 2\), got \(2, 5\)"
    ):
        model.backward(np.ones((2, 5), np.float32))


# ---------------------------------------------------------------------- errors at construction
def test_errors_at_construction_name_the_node():
    x, unused = nf.Input((3,), name="x"), nf.Input((2,), name="unused")
    other = nf.Input((3,), name="other")
    h = nf.Dense(3, 4)(x)
    with pytest.raises(ValueError, match=r"expected every input to be used by an output, got the "
                                         r"input 'unused' \(None, 2\)"):  # fmt: skip
        nf.Model([x, unused], h)
    with pytest.raises(ValueError, match=r"got the output 'add' \(None, 4\) that depends on the "
                                         r"input 'other'"):  # fmt: skip
        nf.Model(x, nf.Add()(h, nf.Dense(3, 4)(other)))
    with pytest.raises(nf.ShapeError, match=r"dense on 'dense' \(None, 4\): Dense\(in_features=5"):
        nf.Dense(5, 2)(h)
    seq_out = nf.GRU(4, 3)(nf.Input((None, 4)))
    with pytest.raises(TypeError, match=r"expected array nodes, got the tuple node 'gru'"):
        nf.Dense(3, 1)(seq_out)
    with pytest.raises(TypeError, match=r"expected inputs to be nf.Input nodes, got the node"):
        nf.Model(h, nf.ReLU()(h))
    with pytest.raises(TypeError, match=r"expected outputs\[1\] to be a node"):
        nf.Model(x, [h, np.ones(3)])
    with pytest.raises(ValueError, match="expected distinct layer names"):
        nf.Model(x, [nf.ReLU()(h, name="act"), nf.Tanh()(h, name="act")])
    with pytest.raises(TypeError, match=r"Node 'dense': expected a tuple node to unpack"):
        a, b = h
    with pytest.raises(nf.ShapeError, match=r"Model: expected input 'x' of shape \(N, 3\), got"):
        nf.Model(x, h)(np.ones((2, 4), np.float32))


# ---------------------------------------------------------------------- random DAGs
@st.composite
def dags(draw):
    """A random DAG of small layers: each new node takes one or two earlier nodes."""
    seed = draw(seeds)
    n_inputs = draw(st.integers(1, 2))
    width = draw(small) + 1
    inputs = [nf.Input((width,), name=f"in{i}") for i in range(n_inputs)]
    nodes = list(inputs)
    shared = nf.Dense(width, width, rng=seed)
    for k in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["dense", "tanh", "shared", "add", "mul", "concat", "avg"]))
        a = nodes[draw(st.integers(0, len(nodes) - 1))]
        b = nodes[draw(st.integers(0, len(nodes) - 1))]
        if kind == "dense":
            node = nf.Dense(width, width, rng=seed + k + 1)(a)
        elif kind == "tanh":
            node = nf.Tanh()(a)
        elif kind == "shared":
            node = shared(a)
        elif kind == "add":
            node = nf.Add()(a, b)
        elif kind == "mul":
            node = nf.Multiply()(a, b)
        elif kind == "avg":
            node = nf.Average()(a, b)
        else:
            node = nf.Dense(2 * width, width, rng=seed + k + 1)(nf.Concatenate()(a, b))
        nodes.append(node)
    outputs = [nodes[-1]] + [n for n in nodes[n_inputs:-1] if draw(st.booleans())][:2]
    outputs += [n for n in inputs if not _used(n, outputs)]  # every input reaches an output
    return nf.Model(inputs, outputs), seed, width, n_inputs


def _used(node, outputs) -> bool:
    stack, seen = list(outputs), set()
    while stack:
        n = stack.pop()
        if n is node:
            return True
        if n.call is not None and id(n) not in seen:
            seen.add(id(n))
            stack.extend(n.call.arg_nodes())
    return False


@given(dag=dags(), n=small)
def test_random_dags_gradcheck(dag, n):
    model, seed, width, n_inputs = dag
    xs = tuple(normal_array(seed + i, (n, width), scale=0.5) for i in range(n_inputs))
    nf.check_module(model, xs)
