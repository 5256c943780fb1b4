"""nnframe: a layer-based neural-network framework on numpy; every layer writes its own backward.

The public API is exactly ``__all__`` (pinned by tests/test_api.py).
"""

import sys

from nnframe import optim
from nnframe._version import __version__ as __version__
from nnframe.core import hooks
from nnframe.core.device import Device, DeviceError, cuda_is_available, device_of, to_device
from nnframe.core.errors import AnomalyError, GradcheckError, ModelFormatError, ShapeError
from nnframe.core.hooks import enable_grad, is_grad_enabled, no_grad
from nnframe.core.module import Module, StateDictError
from nnframe.core.parameter import Parameter
from nnframe.core.random import default_rng, manual_seed
from nnframe.debug import anomaly
from nnframe.debug.anomaly import detect_anomaly, set_detect_anomaly
from nnframe.debug.gradcheck import check_loss, check_module
from nnframe.debug.summary import Summary, summary
from nnframe.io import serialization
from nnframe.io.config import from_config, get_config, register_layer
from nnframe.io.schema import SchemaError
from nnframe.io.serialization import load, load_weights, save, save_weights
from nnframe.layers import init
from nnframe.layers.activations import (
    CELU,
    ELU,
    GELU,
    GLU,
    SELU,
    Hardshrink,
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
    Softmax2d,
    Softmin,
    Softplus,
    Softshrink,
    Softsign,
    Tanh,
    Tanhshrink,
    Threshold,
)
from nnframe.layers.attention import MultiheadAttention, PositionalEncoding
from nnframe.layers.bilinear import Bilinear
from nnframe.layers.containers import Add, Concat, ModuleDict, ModuleList, Residual, Sequential
from nnframe.layers.conv import (
    Conv1d,
    Conv2d,
    Conv3d,
    ConvTranspose1d,
    ConvTranspose2d,
    ConvTranspose3d,
)
from nnframe.layers.dense import Dense, Linear
from nnframe.layers.distance import CosineSimilarity, PairwiseDistance
from nnframe.layers.dropout import AlphaDropout, Dropout, Dropout1d, Dropout2d
from nnframe.layers.embedding import Embedding, EmbeddingBag
from nnframe.layers.fold import Fold, Unfold
from nnframe.layers.graph import Input, Model
from nnframe.layers.losses import (
    BCELoss,
    BCEWithLogitsLoss,
    CosineEmbeddingLoss,
    CrossEntropyLoss,
    GaussianNLLLoss,
    HingeEmbeddingLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    Loss,
    MarginRankingLoss,
    MSELoss,
    MultiLabelMarginLoss,
    MultiLabelSoftMarginLoss,
    MultiMarginLoss,
    NLLLoss,
    PoissonNLLLoss,
    SmoothL1Loss,
    SoftMarginLoss,
    TripletMarginLoss,
)
from nnframe.layers.losses_ctc import CTCLoss
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
    AdaptiveAvgPool3d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AdaptiveMaxPool3d,
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    LPPool1d,
    LPPool2d,
    LPPool3d,
    MaxPool1d,
    MaxPool2d,
    MaxPool3d,
)
from nnframe.layers.recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from nnframe.layers.reshape import Flatten, Reshape, Unflatten, Upsample, ZeroPad2d
from nnframe.layers.shuffle import ChannelShuffle, PixelShuffle, PixelUnshuffle
from nnframe.layers.transformer import TransformerEncoder, TransformerEncoderLayer
from nnframe.layers.transformer_decoder import (
    Transformer,
    TransformerDecoder,
    TransformerDecoderLayer,
)
from nnframe.layers.unpool import MaxUnpool1d, MaxUnpool2d
from nnframe.optim.clip import clip_grad_norm_, clip_grad_value_
from nnframe.training import callbacks, data, datasets, distributed, metrics
from nnframe.training.checkpoint import (
    Checkpoint,
    TrainingCheckpoint,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from nnframe.training.tensorboard import TensorBoard
from nnframe.training.trainer import History, Trainer, TrainerState

__all__ = [
    # core
    "Module",
    "Parameter",
    "Sequential",
    "Dense",
    "Linear",
    "Bilinear",
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
    # devices
    "Device",
    "DeviceError",
    "cuda_is_available",
    "device_of",
    "to_device",
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
    "Threshold",
    "Hardshrink",
    "Softshrink",
    "Tanhshrink",
    "Softmin",
    "Softmax2d",
    "GLU",
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
    "SoftMarginLoss",
    "MultiLabelSoftMarginLoss",
    "MultiLabelMarginLoss",
    "TripletMarginLoss",
    "GaussianNLLLoss",
    "CTCLoss",
    # convolution, pooling, reshaping
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "MaxPool1d",
    "MaxPool2d",
    "AvgPool1d",
    "AvgPool2d",
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "MaxPool3d",
    "AvgPool3d",
    "AdaptiveAvgPool3d",
    "AdaptiveMaxPool3d",
    "LPPool1d",
    "LPPool2d",
    "LPPool3d",
    "MaxUnpool1d",
    "MaxUnpool2d",
    "Flatten",
    "Unflatten",
    "Reshape",
    "ZeroPad2d",
    "Upsample",
    "PixelShuffle",
    "PixelUnshuffle",
    "ChannelShuffle",
    "Fold",
    "Unfold",
    "CosineSimilarity",
    "PairwiseDistance",
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
    "TransformerDecoderLayer",
    "TransformerDecoder",
    "Transformer",
    "PositionalEncoding",
    # training
    "Trainer",
    "TrainerState",
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

# The public submodules keep their import paths (`import nnframe.metrics`, `from nnframe.callbacks
# import EarlyStopping`) after moving into the architecture's folders.
sys.modules["nnframe.anomaly"] = anomaly
sys.modules["nnframe.callbacks"] = callbacks
sys.modules["nnframe.data"] = data
sys.modules["nnframe.datasets"] = datasets
sys.modules["nnframe.distributed"] = distributed
sys.modules["nnframe.hooks"] = hooks
sys.modules["nnframe.init"] = init
sys.modules["nnframe.metrics"] = metrics
sys.modules["nnframe.serialization"] = serialization
