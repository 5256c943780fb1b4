"""nnframe: a layer-based neural-network framework on numpy; every layer writes its own backward.

The public API is exactly ``__all__``. Sections are grouped by area; keep the marker comments.
"""

from nnframe import init, optim
from nnframe.activations import Identity, ReLU, Sigmoid, Tanh
from nnframe.clip import clip_grad_norm_, clip_grad_value_
from nnframe.containers import Sequential
from nnframe.errors import GradcheckError, ShapeError
from nnframe.gradcheck import check_loss, check_module
from nnframe.layers.dense import Dense
from nnframe.losses import CrossEntropyLoss, Loss, MSELoss
from nnframe.module import Module, StateDictError
from nnframe.parameter import Parameter
from nnframe.random import default_rng, manual_seed

# --- activations: imports ---
# isort: split
from nnframe.activations import (
    CELU,
    ELU,
    GELU,
    SELU,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    LeakyReLU,
    LogSigmoid,
    LogSoftmax,
    Mish,
    PReLU,
    ReLU6,
    SiLU,
    Softmax,
    Softplus,
    Softsign,
)

# --- losses: imports ---
# isort: split
from nnframe.losses import (
    BCELoss,
    BCEWithLogitsLoss,
    CosineEmbeddingLoss,
    HingeEmbeddingLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    MarginRankingLoss,
    MultiMarginLoss,
    NLLLoss,
    PoissonNLLLoss,
    SmoothL1Loss,
)

# --- conv: imports ---
from nnframe.layers.conv import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d
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
from nnframe.layers.reshape import Flatten, Reshape, Unflatten, Upsample, ZeroPad2d
# --- normalization: imports ---
# isort: split
from nnframe.containers import Add, Concat, ModuleDict, ModuleList, Residual
from nnframe.layers.dropout import AlphaDropout, Dropout, Dropout1d, Dropout2d
from nnframe.layers.embedding import Embedding, EmbeddingBag
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

# --- recurrent: imports ---
# isort: split
from nnframe.layers.attention import MultiheadAttention, PositionalEncoding
from nnframe.layers.recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from nnframe.layers.transformer import TransformerEncoder, TransformerEncoderLayer

# --- training: imports ---
# isort: split
from nnframe import callbacks, data, datasets, metrics
from nnframe.summary import Summary, summary
from nnframe.training import History, Trainer

# isort: split
# --- serialization: imports ---
from nnframe import anomaly, serialization
from nnframe.anomaly import detect_anomaly, set_detect_anomaly
from nnframe.checkpoint import (
    Checkpoint,
    TrainingCheckpoint,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from nnframe.config import from_config, get_config, register_layer
from nnframe.errors import AnomalyError, ModelFormatError
from nnframe.serialization import load, load_weights, save, save_weights
# --- distributed: imports ---
from nnframe import distributed

__version__ = "0.1.0"

__all__ = [
    # core
    "Module",
    "Parameter",
    "Sequential",
    "Dense",
    "ShapeError",
    "StateDictError",
    "GradcheckError",
    "check_module",
    "check_loss",
    "clip_grad_norm_",
    "clip_grad_value_",
    "manual_seed",
    "default_rng",
    "init",
    "optim",
    # activations
    "ReLU",
    "Sigmoid",
    "Tanh",
    "Identity",
    # --- activations: names ---
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
    "LogSigmoid",
    "Hardtanh",
    "Hardsigmoid",
    "Hardswish",
    "ReLU6",
    "Softmax",
    "LogSoftmax",
    # losses
    "Loss",
    "MSELoss",
    "CrossEntropyLoss",
    # --- losses: names ---
    "L1Loss",
    "HuberLoss",
    "SmoothL1Loss",
    "BCELoss",
    "BCEWithLogitsLoss",
    "NLLLoss",
    "KLDivLoss",
    "PoissonNLLLoss",
    "HingeEmbeddingLoss",
    "MultiMarginLoss",
    "CosineEmbeddingLoss",
    "MarginRankingLoss",
    # --- conv: names ---
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
    "Flatten",
    "Unflatten",
    "Reshape",
    "ZeroPad2d",
    "Upsample",
    # --- normalization: names ---
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
    "Residual",
    "Concat",
    "Add",
    "ModuleList",
    "ModuleDict",
    # --- recurrent: names ---
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
    # --- training: names ---
    "Trainer",
    "History",
    "summary",
    "Summary",
    "data",
    "datasets",
    "metrics",
    "callbacks",
    # --- serialization: names ---
    "save",
    "load",
    "save_weights",
    "load_weights",
    "get_config",
    "from_config",
    "register_layer",
    "ModelFormatError",
    "AnomalyError",
    "detect_anomaly",
    "set_detect_anomaly",
    "anomaly",
    "serialization",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "Checkpoint",
    "TrainingCheckpoint",
    # --- distributed: names ---
    "distributed",
]
