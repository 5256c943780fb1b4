"""nnframe: a layer-based neural-network framework on numpy; every layer writes its own backward.

The public API is exactly ``__all__`` (pinned by tests/test_api.py).
"""

from nnframe import (
    anomaly,
    callbacks,
    data,
    datasets,
    distributed,
    hooks,
    init,
    metrics,
    optim,
    serialization,
)
from nnframe.activations import (
    CELU,
    ELU,
    GELU,
    SELU,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    Identity,
    LeakyReLU,
    LogSigmoid,
    LogSoftmax,
    Mish,
    PReLU,
    ReLU,
    ReLU6,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Softsign,
    Tanh,
)
from nnframe.anomaly import detect_anomaly, set_detect_anomaly
from nnframe.checkpoint import (
    Checkpoint,
    TrainingCheckpoint,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from nnframe.clip import clip_grad_norm_, clip_grad_value_
from nnframe.config import from_config, get_config, register_layer
from nnframe.containers import Add, Concat, ModuleDict, ModuleList, Residual, Sequential
from nnframe.errors import AnomalyError, GradcheckError, ModelFormatError, ShapeError
from nnframe.schema import SchemaError
from nnframe.gradcheck import check_loss, check_module
from nnframe.graph import Input, Model
from nnframe.hooks import enable_grad, is_grad_enabled, no_grad
from nnframe.layers.attention import MultiheadAttention, PositionalEncoding
from nnframe.layers.conv import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d
from nnframe.layers.dense import Dense
from nnframe.layers.dropout import AlphaDropout, Dropout, Dropout1d, Dropout2d
from nnframe.layers.embedding import Embedding, EmbeddingBag
from nnframe.layers.merge import (
    Average,
    Concatenate,
    Dot,
    GetItem,
    Maximum,
    Multiply,
    Subtract,
    TimeStep,
)
from nnframe.layers.normalization import (
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
    GroupNorm,
    InstanceNorm1d,
    InstanceNorm2d,
    LayerNorm,
    RMSNorm,
)
from nnframe.layers.pooling import (
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AvgPool1d,
    AvgPool2d,
    MaxPool1d,
    MaxPool2d,
)
from nnframe.layers.recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from nnframe.layers.reshape import Flatten, Reshape, Unflatten, Upsample, ZeroPad2d
from nnframe.layers.transformer import TransformerEncoder, TransformerEncoderLayer
from nnframe.layers.unpool import MaxUnpool1d, MaxUnpool2d
from nnframe.losses import (
    BCELoss,
    BCEWithLogitsLoss,
    CosineEmbeddingLoss,
    CrossEntropyLoss,
    HingeEmbeddingLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    Loss,
    MarginRankingLoss,
    MSELoss,
    MultiMarginLoss,
    NLLLoss,
    PoissonNLLLoss,
    SmoothL1Loss,
)
from nnframe.module import Module, StateDictError
from nnframe.parameter import Parameter
from nnframe.random import default_rng, manual_seed
from nnframe.serialization import load, load_weights, save, save_weights
from nnframe.summary import Summary, summary
from nnframe.tensorboard import TensorBoard
from nnframe.training import History, Trainer

__version__ = "0.1.0"

__all__ = [
    # core
    "Module",
    "Parameter",
    "Sequential",
    "Dense",
    "init",
    "optim",
    "manual_seed",
    "default_rng",
    "check_module",
    "check_loss",
    "clip_grad_norm_",
    "clip_grad_value_",
    "ShapeError",
    "StateDictError",
    "GradcheckError",
    "no_grad",
    "enable_grad",
    "is_grad_enabled",
    "hooks",
    # activations
    "ReLU",
    "LeakyReLU",
    "PReLU",
    "ELU",
    "CELU",
    "SELU",
    "GELU",
    "SiLU",
    "Mish",
    "Softplus",
    "Softsign",
    "Sigmoid",
    "LogSigmoid",
    "Tanh",
    "Hardtanh",
    "Hardsigmoid",
    "Hardswish",
    "ReLU6",
    "Softmax",
    "LogSoftmax",
    "Identity",
    # losses
    "Loss",
    "MSELoss",
    "L1Loss",
    "HuberLoss",
    "SmoothL1Loss",
    "BCELoss",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "NLLLoss",
    "KLDivLoss",
    "PoissonNLLLoss",
    "HingeEmbeddingLoss",
    "MultiMarginLoss",
    "CosineEmbeddingLoss",
    "MarginRankingLoss",
    # convolution, pooling, reshaping
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "MaxPool1d",
    "MaxPool2d",
    "AvgPool1d",
    "AvgPool2d",
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "MaxUnpool1d",
    "MaxUnpool2d",
    "Flatten",
    "Unflatten",
    "Reshape",
    "ZeroPad2d",
    "Upsample",
    # normalization, regularization, embeddings
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "LayerNorm",
    "GroupNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "RMSNorm",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "AlphaDropout",
    "Embedding",
    "EmbeddingBag",
    # containers
    "Residual",
    "Concat",
    "Add",
    "ModuleList",
    "ModuleDict",
    # graph models, merges and selections
    "Input",
    "Model",
    "Multiply",
    "Subtract",
    "Concatenate",
    "Dot",
    "Average",
    "Maximum",
    "GetItem",
    "TimeStep",
    # sequences
    "RNN",
    "LSTM",
    "GRU",
    "RNNCell",
    "LSTMCell",
    "GRUCell",
    "MultiheadAttention",
    "TransformerEncoderLayer",
    "TransformerEncoder",
    "PositionalEncoding",
    # training
    "Trainer",
    "History",
    "TensorBoard",
    "summary",
    "Summary",
    "callbacks",
    "metrics",
    "data",
    "datasets",
    # files and debugging
    "save",
    "load",
    "save_weights",
    "load_weights",
    "serialization",
    "get_config",
    "from_config",
    "register_layer",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "Checkpoint",
    "TrainingCheckpoint",
    "ModelFormatError",
    "SchemaError",
    "detect_anomaly",
    "set_detect_anomaly",
    "anomaly",
    "AnomalyError",
    # many processes
    "distributed",
]
