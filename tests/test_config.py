"""Architecture configs: every public layer round-trips through JSON; custom layers register by
name; loading only maps names through the registry (nothing is imported or evaluated)."""

import json

import numpy as np
import pytest

import nnframe as nf

CHECKED_MODULES = []

# One example construction per public layer (a class missing here that cannot be built without
# arguments fails test_every_public_layer_has_an_example: add it).
EXAMPLES = {
    "Sequential": lambda: nf.Sequential(nf.Dense(3, 4, rng=0), nf.ReLU(), nf.Dense(4, 2, rng=1)),
    "Dense": lambda: nf.Dense(3, 4, bias=False, rng=0, dtype=np.float64),
    "LeakyReLU": lambda: nf.LeakyReLU(0.2),
    "PReLU": lambda: nf.PReLU(3, init=0.1),
    "ELU": lambda: nf.ELU(alpha=0.5),
    "CELU": lambda: nf.CELU(alpha=0.5),
    "GELU": lambda: nf.GELU(approximate="tanh"),
    "Softplus": lambda: nf.Softplus(beta=2.0, threshold=10.0),
    "Hardtanh": lambda: nf.Hardtanh(-2.0, 2.0),
    "Softmax": lambda: nf.Softmax(dim=1),
    "LogSoftmax": lambda: nf.LogSoftmax(dim=1),
    "Conv1d": lambda: nf.Conv1d(2, 3, 3, stride=2, padding=1),
    "Conv2d": lambda: nf.Conv2d(2, 4, (3, 2), padding=(1, 0), groups=2, bias=False),
    "Conv3d": lambda: nf.Conv3d(1, 2, 2),
    "ConvTranspose1d": lambda: nf.ConvTranspose1d(2, 3, 3, stride=2),
    "ConvTranspose2d": lambda: nf.ConvTranspose2d(2, 3, (2, 2), stride=2),
    "MaxPool1d": lambda: nf.MaxPool1d(2),
    "MaxPool2d": lambda: nf.MaxPool2d((2, 2), stride=1, ceil_mode=True),
    "AvgPool1d": lambda: nf.AvgPool1d(3, stride=1, padding=1),
    "AvgPool2d": lambda: nf.AvgPool2d(2, divisor_override=3),
    "AdaptiveAvgPool1d": lambda: nf.AdaptiveAvgPool1d(4),
    "AdaptiveAvgPool2d": lambda: nf.AdaptiveAvgPool2d((2, 3)),
    "AdaptiveMaxPool1d": lambda: nf.AdaptiveMaxPool1d(2),
    "AdaptiveMaxPool2d": lambda: nf.AdaptiveMaxPool2d(2),
    "Flatten": lambda: nf.Flatten(start_dim=2),
    "Unflatten": lambda: nf.Unflatten(1, (2, 3)),
    "Reshape": lambda: nf.Reshape(2, -1),
    "ZeroPad2d": lambda: nf.ZeroPad2d((1, 0, 2, 1)),
    "Upsample": lambda: nf.Upsample(scale_factor=2),
    "BatchNorm1d": lambda: nf.BatchNorm1d(4, momentum=0.2),
    "BatchNorm2d": lambda: nf.BatchNorm2d(3, affine=False),
    "BatchNorm3d": lambda: nf.BatchNorm3d(2),
    "LayerNorm": lambda: nf.LayerNorm((2, 3), eps=1e-3),
    "GroupNorm": lambda: nf.GroupNorm(2, 4),
    "InstanceNorm1d": lambda: nf.InstanceNorm1d(3, affine=True),
    "InstanceNorm2d": lambda: nf.InstanceNorm2d(3, track_running_stats=True),
    "RMSNorm": lambda: nf.RMSNorm(5),
    "Dropout": lambda: nf.Dropout(0.3, rng=np.random.default_rng(0)),
    "Dropout1d": lambda: nf.Dropout1d(0.2),
    "Dropout2d": lambda: nf.Dropout2d(0.2),
    "AlphaDropout": lambda: nf.AlphaDropout(0.1),
    "Embedding": lambda: nf.Embedding(10, 3, padding_idx=0),
    "EmbeddingBag": lambda: nf.EmbeddingBag(10, 3, mode="sum"),
    "Residual": lambda: nf.Residual(nf.Sequential(nf.Dense(3, 3, rng=0), nf.Tanh())),
    "Concat": lambda: nf.Concat(nf.Dense(3, 2, rng=0), nf.Dense(3, 1, rng=1), axis=-1),
    "Add": lambda: nf.Add(nf.Dense(3, 2, rng=0), nf.Identity()),
    "ModuleList": lambda: nf.ModuleList([nf.Dense(2, 2, rng=0), nf.ReLU()]),
    "ModuleDict": lambda: nf.ModuleDict({"a": nf.Dense(2, 2, rng=0), "b": nf.ReLU()}),
    "RNN": lambda: nf.RNN(3, 4, num_layers=2, nonlinearity="relu"),
    "LSTM": lambda: nf.LSTM(3, 4, bidirectional=True),
    "GRU": lambda: nf.GRU(3, 4, batch_first=False),
    "RNNCell": lambda: nf.RNNCell(3, 4),
    "LSTMCell": lambda: nf.LSTMCell(3, 4),
    "GRUCell": lambda: nf.GRUCell(3, 4, bias=False),
    "MultiheadAttention": lambda: nf.MultiheadAttention(8, 2, kdim=4, vdim=6),
    "TransformerEncoderLayer": lambda: nf.TransformerEncoderLayer(8, 2, dim_feedforward=16),
    "TransformerEncoder": lambda: nf.TransformerEncoder(
        nf.TransformerEncoderLayer(8, 2, dim_feedforward=16, norm_first=True), 2, nf.LayerNorm(8)
    ),
    "PositionalEncoding": lambda: nf.PositionalEncoding(8, max_len=50),
    # issue 14's layers
    "Linear": lambda: nf.Linear(3, 2, bias=False),
    "Bilinear": lambda: nf.Bilinear(3, 4, 2),
    "Threshold": lambda: nf.Threshold(0.1, -1.0),
    "ConvTranspose3d": lambda: nf.ConvTranspose3d(2, 4, (1, 2, 2), stride=2, groups=2),
    "MaxPool3d": lambda: nf.MaxPool3d(2, 1, 1, ceil_mode=True),
    "AvgPool3d": lambda: nf.AvgPool3d(2, count_include_pad=False, divisor_override=3),
    "AdaptiveAvgPool3d": lambda: nf.AdaptiveAvgPool3d((1, None, 2)),
    "AdaptiveMaxPool3d": lambda: nf.AdaptiveMaxPool3d(2),
    "LPPool1d": lambda: nf.LPPool1d(2, 3, 2),
    "LPPool2d": lambda: nf.LPPool2d(1.5, (2, 3), ceil_mode=True),
    "LPPool3d": lambda: nf.LPPool3d(3, (1, 2, 3), (1, 2, 1)),
    "MaxUnpool1d": lambda: nf.MaxUnpool1d(3, stride=2, padding=1),
    "MaxUnpool2d": lambda: nf.MaxUnpool2d((2, 3), stride=(1, 2)),
    "PixelShuffle": lambda: nf.PixelShuffle(2),
    "PixelUnshuffle": lambda: nf.PixelUnshuffle(3),
    "ChannelShuffle": lambda: nf.ChannelShuffle(2),
    "Fold": lambda: nf.Fold((4, 5), 2, stride=(1, 2)),
    "Unfold": lambda: nf.Unfold((2, 3), dilation=2, padding=1),
    "TransformerDecoderLayer": lambda: nf.TransformerDecoderLayer(8, 2, 16, norm_first=True),
    "TransformerDecoder": lambda: nf.TransformerDecoder(
        nf.TransformerDecoderLayer(8, 2, dim_feedforward=16), 2, nf.LayerNorm(8)
    ),
    "Model": lambda: _small_graph(),
    "GetItem": lambda: nf.GetItem(1, 0),
    "Dot": lambda: nf.Dot(axes=(1, 2), normalize=True),
    "Concatenate": lambda: nf.Concatenate(axis=1),
    "TimeStep": lambda: nf.TimeStep(-2, batch_first=False),
}


def _small_graph():
    x = nf.Input((3,), name="x")
    h = nf.Dense(3, 4, rng=0)(x)
    return nf.Model(x, [nf.Add()(h, nf.Tanh()(h)), h], name="small")


def public_layers():
    return {
        name: getattr(nf, name)
        for name in nf.__all__
        if isinstance(getattr(nf, name), type)
        and issubclass(getattr(nf, name), nf.Module)
        and getattr(nf, name) is not nf.Module
    }


def build(name):
    if name in EXAMPLES:
        return EXAMPLES[name]()
    return public_layers()[name]()


def buildable():
    """Layers with an example or a constructor without required arguments (the others fail
    test_every_public_layer_has_an_example)."""
    names = []
    for name in public_layers():
        try:
            build(name)
        except TypeError:
            continue
        names.append(name)
    return sorted(names)


def shapes(model):
    return {k: (v.shape, v.dtype) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", buildable())
def test_every_public_layer_round_trips_through_json(name, tmp_path):
    layer = build(name)
    config = json.loads(json.dumps(layer.get_config()))  # really JSON
    # the class's own name; an alias (nf.Linear is nf.Dense) is the same class
    assert config["class"] == type(layer).__name__ and getattr(nf, name) is type(layer)
    rebuilt = nf.from_config(config)
    assert type(rebuilt) is type(layer)
    assert repr(rebuilt) == repr(layer)
    assert shapes(rebuilt) == shapes(layer)
    nf.save(layer, tmp_path / "m.safetensors")
    loaded = nf.load(tmp_path / "m.safetensors")
    assert repr(loaded) == repr(layer)
    for k, v in layer.state_dict().items():
        assert np.array_equal(loaded.state_dict()[k], v), k


def test_every_public_layer_has_an_example():
    missing = []
    for name, cls in public_layers().items():
        if name not in EXAMPLES:
            try:
                cls()
            except TypeError:
                missing.append(name)
    assert not missing, f"add construction examples to tests/test_config.py for {missing}"


def test_config_contents_are_the_constructor_arguments():
    config = nf.Dense(3, 4, bias=False, rng=5, dtype=np.float64).get_config()
    assert config == {
        "class": "Dense",
        "config": {
            "in_features": 3,
            "out_features": 4,
            "bias": False,
            "dtype": {"__dtype__": "float64"},
        },
    }
    assert nf.get_config(nf.ReLU()) == {"class": "ReLU", "config": {}}
    rebuilt = nf.Dense.from_config(config)
    assert rebuilt.weight.dtype == np.float64 and rebuilt.bias is None


def test_callable_initializer_and_rng_are_left_out():
    def ones(shape, rng, dtype):
        return np.ones(shape, dtype=dtype)

    layer = nf.Dense(2, 3, init=ones, rng=np.random.default_rng(0))
    assert layer.get_config()["config"] == {"in_features": 2, "out_features": 3}
    assert nf.Dense(2, 3, init="xavier_uniform").get_config()["config"]["init"] == "xavier_uniform"


def test_sequential_append_and_shared_modules():
    shared = nf.Dense(2, 2, rng=0)
    model = nf.Sequential(shared, nf.Tanh())
    model.append(shared)
    config = json.loads(json.dumps(model.get_config()))
    rebuilt = nf.from_config(config)
    assert len(rebuilt) == 3 and rebuilt[0] is rebuilt[2]
    assert shapes(rebuilt) == shapes(model)


def test_module_from_config_checks_the_class():
    with pytest.raises(TypeError, match="Dense.from_config: got a config of ReLU"):
        nf.Dense.from_config(nf.ReLU().get_config())


# ---------------------------------------------------------------------- custom layers
class CfgScale(nf.Module):
    def __init__(self, features, *, gain=1.0, dtype=np.float32):
        super().__init__()
        self.gamma = nf.Parameter(np.full(features, gain, dtype=dtype))

    def forward(self, x):
        return x * self.gamma.data


class CfgScaleTwice(CfgScale):  # no __init__ of its own: the parent's records its arguments
    pass


def test_custom_layer_needs_registration_with_a_clear_message(tmp_path):
    model = nf.Sequential(nf.Dense(2, 3, rng=0), Unregistered(3))
    with pytest.raises(ValueError, match=r"unknown layer class 'Unregistered'.*register_layer"):
        nf.save(model, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()
    config = nf.get_config(model)
    with pytest.raises(nf.ModelFormatError, match=r"nnframe.register_layer\(Unregistered\)"):
        nf.from_config(config)
    rebuilt = nf.from_config(config, registry={"Unregistered": Unregistered})
    assert shapes(rebuilt) == shapes(model)


class Unregistered(CfgScale):
    def __init__(self, features):
        super().__init__(features, gain=2.0)


def test_registered_custom_layer_saves_and_loads(tmp_path):
    nf.register_layer(CfgScale)
    nf.register_layer(CfgScaleTwice)
    model = nf.Sequential(nf.Dense(2, 3, rng=0), CfgScale(3, gain=0.5), CfgScaleTwice(3, gain=2.0))
    model[1].gamma.data[:] = [1.0, 2.0, 3.0]
    nf.save(model, tmp_path / "m.safetensors")
    loaded = nf.load(tmp_path / "m.safetensors")
    assert type(loaded[1]) is CfgScale and type(loaded[2]) is CfgScaleTwice
    np.testing.assert_array_equal(loaded[1].gamma.data, [1.0, 2.0, 3.0])
    assert loaded[2].get_config()["config"] == {"features": 3, "gain": 2.0}


def test_register_layer_as_decorator_with_a_name_and_collisions():
    @nf.register_layer(name="tests.Doubler")
    class Doubler(nf.Module):
        def forward(self, x):
            return 2 * x

    assert Doubler().get_config() == {"class": "tests.Doubler", "config": {}}
    assert type(nf.from_config({"class": "tests.Doubler", "config": {}})) is Doubler

    class Dense(nf.Module):
        pass

    with pytest.raises(ValueError, match="the name 'Dense' is taken by nnframe"):
        nf.register_layer(Dense)
    with pytest.raises(TypeError, match="expected a Module subclass"):
        nf.register_layer(int)

    @nf.register_layer(name="tests.Doubler")
    class Doubler(nf.Module):  # the same statement again (a re-run cell): replaces it
        pass

    assert type(nf.from_config({"class": "tests.Doubler", "config": {}})) is Doubler


def test_layer_with_its_own_get_config_and_from_config(tmp_path):
    @nf.register_layer
    class Table(nf.Module):
        def __init__(self, rows):
            super().__init__()
            self.rows = rows
            self.weight = nf.Parameter(np.zeros((len(rows), 2), dtype=np.float32))

        def get_config(self):
            return {"class": "Table", "config": {"names": [r.upper() for r in self.rows]}}

        @classmethod
        def from_config(cls, config):
            return cls([n.lower() for n in config["config"]["names"]])

    nf.save(nf.Sequential(Table(["a", "b"])), tmp_path / "t.safetensors")
    assert nf.load(tmp_path / "t.safetensors")[0].rows == ["a", "b"]


def test_unstorable_argument_is_a_clear_error():
    @nf.register_layer
    class Hook(nf.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

    with pytest.raises(TypeError, match=r"Hook argument fn=.* cannot be stored in a config"):
        nf.get_config(Hook(print))


# ---------------------------------------------------------------------- hostile configs
@pytest.mark.parametrize(
    "config, message",
    [
        ({"class": "os.system", "config": {}}, "unknown layer class 'os.system'"),
        ({"class": "__import__", "config": {}}, "unknown layer class '__import__'"),
        ([1, 2], "expected a dict with a 'class'"),
        ({"class": "Dense", "config": [3, 4]}, "expected 'config' to be an object"),
        ({"class": "Dense", "config": {"in_features": 3, "evil": 1}}, "unknown argument"),
        ({"class": "Dense", "config": {"in_features": -3, "out_features": 2}}, "in_features=-3"),
        ({"class": "Dense", "config": {"in_features": "3", "out_features": 2}}, "refused"),
        (
            {
                "class": "Dense",
                "config": {"in_features": 3, "out_features": 2, "dtype": {"__dtype__": "object"}},
            },
            "unknown or malformed tag '__dtype__'",
        ),
        (
            {"class": "Sequential", "config": {"layers": {"__pickle__": "x"}}},
            "unknown or malformed",
        ),
        ({"class": "Sequential", "config": {"layers": [{"__shared__": 7}]}}, "unknown module 7"),
        ({"class": "Sequential", "config": {"layers": [3]}}, "refused"),
    ],
)
def test_hostile_or_malformed_configs_raise_model_format_error(config, message):
    with pytest.raises(nf.ModelFormatError, match=message):
        nf.from_config(config)


def test_deeply_nested_config_is_refused():
    config = {"class": "ReLU", "config": {}}
    for _ in range(200):
        config = {"class": "Sequential", "config": {"layers": [{"__module__": config}]}}
    with pytest.raises(nf.ModelFormatError, match="nested deeper than"):
        nf.from_config(config)


def test_saving_never_changes_the_default_random_stream(tmp_path):
    nf.manual_seed(3)
    expected = nf.default_rng().normal(size=4)
    nf.manual_seed(3)
    nf.save(nf.Sequential(nf.Dense(3, 4), nf.Dense(4, 2)), tmp_path / "m.safetensors")
    nf.manual_seed(3)
    model = nf.Sequential(nf.Dense(3, 4), nf.Dense(4, 2))
    nf.manual_seed(3)
    nf.save(model, tmp_path / "m.safetensors")  # rebuilds the config to check it
    np.testing.assert_array_equal(nf.default_rng().normal(size=4), expected)


# ---------------------------------------------------------------------- issue 15: malformed configs
@pytest.mark.parametrize(
    "edit",
    [
        {"ref": [1]},
        {"ref": {"a": 1}},
        {"ref": "x"},
        {"ref": -1},
        {"ref": True},
        {"ref": 1.5},
        {"extra": 1},
    ],
)
def test_a_malformed_ref_or_key_is_a_model_format_error(edit):
    # issue 15 defect 7: a list ref escaped as TypeError: unhashable type: 'list'
    config = nf.get_config(nf.Sequential(nf.Dense(2, 3), nf.ReLU()))
    config.update(edit)
    with pytest.raises(nf.ModelFormatError, match="from_config: Sequential"):
        nf.from_config(config)


def test_a_ref_used_twice_is_a_model_format_error():
    shared = nf.Dense(2, 2)
    config = nf.get_config(nf.Sequential(shared, nf.ReLU(), shared))
    text = json.dumps(config)
    assert '"__shared__": 1' in text
    config["ref"] = 1
    with pytest.raises(nf.ModelFormatError, match="from_config: .*ref"):
        nf.from_config(config)
