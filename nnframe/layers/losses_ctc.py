"""Connectionist temporal classification: CTCLoss, as PyTorch's ``nn.CTCLoss``.

CTC scores a label sequence against per-frame class log-probabilities without an alignment:
the loss is -log of the total probability of every frame labelling that collapses (merge
repeats, drop blanks) to the target. The forward-backward recursions run over the extended
target ``l' = (blank, l_1, blank, l_2, ..., l_L, blank)`` of length 2L + 1, entirely in log
space (``np.logaddexp``), vectorized over the batch and the extended positions, one step per
frame:

    alpha_t(s) = lp_t(l'_s) + logsumexp(alpha_{t-1}(s), alpha_{t-1}(s-1), alpha_{t-1}(s-2))
    beta_t(s)  = lp_t(l'_s) + logsumexp(beta_{t+1}(s), beta_{t+1}(s+1), beta_{t+1}(s+2))

(the s-2 / s+2 skip only onto a different non-blank label), and the loss is
-logsumexp(alpha_{T-1}(2L), alpha_{T-1}(2L-1)). The gradient with respect to lp_t(k) is
-sum_{s: l'_s = k} exp(alpha_t(s) + beta_t(s) - lp_t(k) + loss): each term is a posterior
probability in [0, 1], so the exponential cannot overflow.
"""

from __future__ import annotations

import numpy as np

from nnframe.core.backend import array_module, to_numpy
from nnframe.core.errors import ShapeError, check_hyper, expected_got, fmt_shape
from nnframe.layers.losses import Loss, _float_array

_NEG = -np.inf


def _int_array(who: str, name: str, value) -> np.ndarray:
    a = np.asarray(to_numpy(value))  # lengths and targets are checked on the host
    if a.dtype.kind not in "iu":
        if a.dtype.kind == "f" and np.all(np.mod(a, 1) == 0):
            return a.astype(np.int64)
        if a.size or a.dtype.kind not in "fO":
            raise TypeError(expected_got(who, f"integer {name}", f"dtype {a.dtype}"))
    return a.astype(np.int64)


def ctc_forward_backward(lp: np.ndarray, ext: np.ndarray, t_len: np.ndarray, s_len: np.ndarray):
    """(nll (N,), log_alpha (T, N, S'), log_beta (T, N, S'), lp of the extended labels).

    Args:
        lp: log-probabilities (T, N, C).
        ext: extended labels (N, S') (padding positions hold the blank).
        t_len: frames per sample (N,).
        s_len: extended lengths 2 L + 1 per sample (N,).
    """
    T, N, _ = lp.shape
    S = ext.shape[1]
    xm = array_module(lp)
    if xm is not np:  # the labels and lengths join the log-probabilities' module
        ext, t_len, s_len = xm.asarray(ext), xm.asarray(t_len), xm.asarray(s_len)
    rows = xm.arange(N)
    lpe = np.take_along_axis(lp, np.broadcast_to(ext[None], (T, N, S)), axis=2)  # (T, N, S')
    pos = xm.arange(S)
    inside = pos[None, :] < s_len[:, None]  # (N, S'): positions of each sample's l'
    # the skip s-2 -> s is allowed onto a label (odd s) that differs from the one at s-2
    skip = xm.zeros((N, S), bool)
    if S > 2:
        skip[:, 2:] = (pos[2:] % 2 == 1) & (ext[:, 2:] != ext[:, :-2])
    alpha = xm.full((T, N, S), _NEG, dtype=lp.dtype)
    beta = xm.full((T, N, S), _NEG, dtype=lp.dtype)
    if T == 0 or N == 0:
        return xm.zeros(N, dtype=lp.dtype), alpha, beta, lpe
    with np.errstate(invalid="ignore"):
        alpha[0, :, :2] = lpe[0, :, :2]
        alpha[0][~inside] = _NEG
        for t in range(1, T):
            prev = alpha[t - 1]
            a = prev.copy()
            np.logaddexp(a[:, 1:], prev[:, :-1], out=a[:, 1:])
            np.logaddexp(a[:, 2:], np.where(skip[:, 2:], prev[:, :-2], _NEG), out=a[:, 2:])
            a += lpe[t]
            a[~inside] = _NEG
            alpha[t] = a
        last = np.maximum(t_len - 1, 0)
        end = alpha[last, rows]  # (N, S'): alpha at each sample's last frame
        i2 = s_len - 1
        ll = np.logaddexp(end[rows, i2], np.where(i2 >= 1, end[rows, np.maximum(i2 - 1, 0)], _NEG))
        ll = np.where(t_len > 0, ll, np.where(s_len == 1, 0.0, _NEG))  # no frames: only L = 0
        # beta starts at each sample's last frame, on its last two extended positions
        skip_up = xm.zeros((N, S), bool)  # s + 2 -> s allowed: the same rule, seen from s + 2
        skip_up[:, :-2] = skip[:, 2:]
        for t in range(T - 1, -1, -1):
            start = t == t_len - 1
            b = xm.full((N, S), _NEG, dtype=lp.dtype)
            if t + 1 < T:
                nxt = beta[t + 1]
                b[:] = nxt
                np.logaddexp(b[:, :-1], nxt[:, 1:], out=b[:, :-1])
                np.logaddexp(b[:, :-2], np.where(skip_up[:, :-2], nxt[:, 2:], _NEG), out=b[:, :-2])
                b += lpe[t]
            if start.any():
                init = xm.full((N, S), _NEG, dtype=lp.dtype)
                init[rows, i2] = lpe[t, rows, i2]
                init[rows, np.maximum(i2 - 1, 0)] = np.where(
                    i2 >= 1, lpe[t, rows, np.maximum(i2 - 1, 0)], init[rows, 0]
                )
                b = np.where(start[:, None], init, b)
            b[~inside | (t >= t_len)[:, None]] = _NEG
            beta[t] = b
    return -ll, alpha, beta, lpe


class CTCLoss(Loss):
    """Connectionist temporal classification loss (Graves et al. 2006), as PyTorch's.

    Call as ``loss(log_probs, targets, input_lengths, target_lengths)``; ``backward()`` returns
    dL/dlog_probs. ``log_probs`` are per-frame log-probabilities (a log_softmax over the
    classes). The forward-backward recursions run in log space (stable for any lengths).

    Gradient: nnframe returns the exact partial derivative with respect to ``log_probs``.
    PyTorch's backward adds ``exp(log_probs)`` to it, a term that vanishes once passed back
    through the log_softmax that produced them, so the two agree on the logits.

    Args:
        blank: the blank class index.
        reduction: 'mean' (each sample's loss divided by its target length, at least 1, then
            the mean over the batch, as PyTorch), 'sum' or 'none'.
        zero_infinity: impossible alignments (an infinite loss, e.g. a target longer than its
            input) give a zero loss and zero gradient instead of inf and NaN gradients.

    Shape:
        log_probs: (T, N, C) or (T, C) unbatched.
        targets: (N, S) padded, or (sum(target_lengths),) concatenated; (S,) unbatched.
            Class indices, never the blank.
        input_lengths: (N,) ints <= T (a scalar unbatched).
        target_lengths: (N,) ints (<= S for padded targets; a scalar unbatched).
        output: float, or (N,) with 'none' (0-d unbatched).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> lp = np.log(np.full((2, 1, 2), 0.5))  # two frames, classes {blank, a}, uniform
        >>> ctc = nf.CTCLoss(reduction="sum")
        >>> round(ctc(lp, np.array([[1]]), [2], [1]), 4)  # -log P(aa, a-, -a) = -log 0.75
        0.2877
    """

    hyper = ("blank", "zero_infinity")

    def __init__(self, blank: int = 0, reduction: str = "mean", zero_infinity: bool = False):
        super().__init__(reduction)
        ok = isinstance(blank, (int, np.integer)) and not isinstance(blank, bool) and blank >= 0
        check_hyper(self.name, "blank", blank, ok, "must be an int >= 0")
        self.blank, self.zero_infinity = int(blank), bool(zero_infinity)
        self._lengths = None

    def __call__(self, log_probs, targets, input_lengths, target_lengths, sample_weight=None):
        self._lengths = (input_lengths, target_lengths)
        try:
            return self.forward(log_probs, targets, sample_weight=sample_weight)
        finally:
            self._lengths = None

    def as_pred(self, pred):
        return _float_array(self.name, pred)

    def _inputs(self, lp, targets):
        """Checks the four inputs; returns (lp (T, N, C), padded targets (N, S), input
        lengths (N,), target lengths (N,), unbatched)."""
        who = self.name
        if self._lengths is None:
            raise TypeError(
                f"{who}: expected a call loss(log_probs, targets, input_lengths, target_lengths)"
            )
        unbatched = lp.ndim == 2
        if lp.ndim not in (2, 3):
            raise ShapeError(
                expected_got(who, "log_probs of shape (T, N, C) or (T, C)", fmt_shape(lp.shape))
            )
        if unbatched:
            lp = lp[:, None]
        T, N, C = lp.shape
        check_hyper(who, "blank", self.blank, self.blank < C, f"must be < C={C} (the classes)")
        t_len = _int_array(who, "input_lengths", self._lengths[0]).reshape(-1)
        s_len = _int_array(who, "target_lengths", self._lengths[1]).reshape(-1)
        for name, a in (("input_lengths", t_len), ("target_lengths", s_len)):
            if a.shape != (N,):
                raise ShapeError(expected_got(who, f"{name} of shape ({N},)", fmt_shape(a.shape)))
            if (a < 0).any():
                raise ValueError(expected_got(who, f"{name} >= 0", str(int(a[a < 0][0]))))
        if (t_len > T).any():
            raise ValueError(
                expected_got(who, f"input_lengths <= T={T}", str(int(t_len[t_len > T][0])))
            )
        y = _int_array(who, "targets", targets)
        if unbatched:
            y = y.reshape(1, -1)
        if y.ndim == 1:  # concatenated targets: split by target_lengths
            if y.shape[0] != s_len.sum():
                raise ShapeError(
                    expected_got(
                        who,
                        f"concatenated targets of shape ({int(s_len.sum())},) (sum of "
                        "target_lengths)",
                        fmt_shape(y.shape),
                    )
                )
            padded = np.full((N, int(s_len.max(initial=0))), self.blank, dtype=np.int64)
            padded[np.arange(padded.shape[1])[None, :] < s_len[:, None]] = y
            y = padded
        elif y.ndim != 2 or y.shape[0] != N:
            raise ShapeError(
                expected_got(
                    who, f"targets of shape ({N}, S) or (sum(target_lengths),)", fmt_shape(y.shape)
                )
            )
        if (s_len > y.shape[1]).any():
            raise ValueError(
                expected_got(who, f"target_lengths <= S={y.shape[1]}", str(int(s_len.max())))
            )
        used = np.arange(y.shape[1])[None, :] < s_len[:, None]
        bad = used & ((y < 0) | (y >= C) | (y == self.blank))
        if bad.any():
            raise ValueError(
                f"{who}: targets must hold class indices in [0, {C}) other than the blank "
                f"{self.blank}, got {int(y[bad][0])}"
            )
        return lp, np.where(used, y, self.blank), t_len, s_len, unbatched

    def elements(self, pred, target):
        lp, y, t_len, s_len, unbatched = self._inputs(pred, target)
        N = lp.shape[1]
        ext = np.full((N, 2 * y.shape[1] + 1), self.blank, dtype=np.int64)
        ext[:, 1::2] = y
        xm = array_module(lp)
        if xm is not np:  # built on the host; used with lp (and by grad) in lp's module
            ext = xm.asarray(ext)
        nll, alpha, beta, lpe = ctc_forward_backward(lp, ext, t_len, 2 * s_len + 1)
        zeroed = np.isinf(nll) & self.zero_infinity
        nll = np.where(zeroed, 0.0, nll).astype(lp.dtype)
        scale = xm.ones(N, dtype=lp.dtype)
        if self.reduction == "mean":  # PyTorch: each loss over its target length, then the mean
            scale = xm.asarray(1 / np.maximum(s_len, 1), dtype=lp.dtype)
        self.save_for_backward(alpha, beta, lpe, ext, nll, zeroed, scale, pred.shape, lp.shape)
        losses = nll * scale
        return losses.reshape(()) if unbatched else losses

    def grad(self, g):
        alpha, beta, lpe, ext, nll, zeroed, scale, shape, lp_shape = self.saved
        T, N, C = lp_shape
        xm = array_module(alpha)
        grad = xm.zeros(lp_shape, dtype=alpha.dtype)
        if T == 0 or N == 0:
            return grad.reshape(shape)
        with np.errstate(invalid="ignore", over="ignore"):
            # posterior of each extended position: alpha beta / (lp p), in [0, 1]
            r = np.exp(alpha + beta - lpe + nll[None, :, None])
        r = np.where(np.isfinite(lpe), r, 0.0)  # lp = -inf: that label never occurs there
        rows = xm.arange(N)
        for s in range(ext.shape[1]):  # one label per (sample, position): no repeated index
            grad[:, rows, ext[:, s]] -= r[:, :, s]
        coef = np.broadcast_to(xm.asarray(g, dtype=grad.dtype).reshape(-1), (N,)) * scale
        coef = np.where(zeroed, 0.0, coef)
        return (grad * coef[None, :, None]).reshape(shape)
