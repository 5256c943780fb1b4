"""Recurrent layers: RNN, LSTM, GRU and their cells, with PyTorch's names, shapes and gate orders.

The RNN and GRU run every time step's input projection as one matrix product, then loop over
time doing only the recurrent product ``W_hh @ h`` and the gate non-linearities on one stacked
``(G*H, N)`` array per step. The LSTM folds the input projection into each step's product,
``[W_hh | W_ih | b] @ [h; x_t; 1]`` (no separate pass adding the two). Backward mirrors it: the
loop only computes the gate gradients and ``W_hh^T @ dA``; the weight gradients are summed over
blocks of steps, one GEMM per block.

Gate orders (rows of ``weight_ih`` / ``weight_hh``), as PyTorch:

- LSTM: input i, forget f, cell g, output o. ``c' = f*c + i*g``, ``h' = o*tanh(c')``
  (with ``proj_size`` P > 0: ``h' = (o*tanh(c')) @ weight_hr^T``).
- GRU: reset r, update z, new n. ``n = tanh(W_in x + b_in + r*(W_hn h + b_hn))``,
  ``h' = (1-z)*n + z*h``.
- RNN: ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`` (or relu).

Internally sequences are time-major and feature-major, ``(T, F, N)``, so that each step's
slice and each gate's rows are contiguous (see the kernels' note below). The sequence output is
a transposed view of that layout, as PyTorch's batch_first output is a transposed view.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from nnframe._pytorch_args import check_device, resolve_dtype
from nnframe.core.backend import (
    array_module,
    elementwise,
    random_generator,
    stepped_matmul,
    to_numpy,
)
from nnframe.core.errors import (
    ShapeError,
    as_float_input,
    check_hyper,
    check_size,
    expected_got,
    fmt_shape,
)
from nnframe.core.input_spec import InputSpec
from nnframe.core.module import Module
from nnframe.core.parameter import Parameter
from nnframe.core.random import get_rng
from nnframe.layers._recurrent_kernels import (
    GRU_STEP,
    GRU_STEP_BACK,
    LSTM_STEP,
    LSTM_STEP_BACK,
    LSTM_STEP_OWN,
)
from nnframe.layers.init import uniform

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


# ---------------------------------------------------------------------------------------------
# kernels: one direction of one layer over a whole sequence
#
# Layout: inside a stack, sequences are feature-major, (T, F, N): each step's state is an (H, N)
# array and each step's stacked gate pre-activations are one (G*H, N) array, ``W_hh @ h``. Every
# gate is then a contiguous block of rows, so the element-wise gate math runs on contiguous
# arrays (numpy is several times slower on strided column slices), and the GEMMs are as fast
# as in the row-major layout. The layer transposes once on the way in and once on the way out.
#
# The weights are rearranged once per forward (``_Prepared``): LSTM gates reordered to
# (g, f, i, o) so that the three sigmoid gates are one block (and g comes first: see
# _lstm_forward), and the rows of every sigmoid gate scaled by 1/2, because sigmoid(x) =
# (1 + tanh(x/2)) / 2: one tanh over the whole stacked array serves every gate, then one
# affine fix-up of the sigmoid block.
#
# xp: (T, G*H, N) input pre-activations (W_ih @ x with the biases folded in; for the GRU the
# hidden bias of the new gate, b_hn, stays apart because r multiplies it).
# mask: None, or (mf, keep) float arrays (T, 1, N): mf = 1 at real steps, keep = 1 - mf.
# At a padded step the state passes through unchanged and the output is zero, so the final
# state is the one after each sequence's last real step (PyTorch's packed-sequence semantics,
# also for the reverse direction, which then starts at each sequence's own last step).
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _lstm_perm(H: int) -> np.ndarray:
    """Kernel row k holds PyTorch's row perm[k]: (i, f, g, o) -> (g, f, i, o). Swapping two
    blocks is its own inverse, so the same indices bring gradients back. Read-only: cached."""
    perm = np.r_[2 * H : 3 * H, H : 2 * H, 0:H, 3 * H : 4 * H]
    perm.flags.writeable = False
    return perm


def _order(T: int, reverse: bool) -> range:
    return range(T - 1, -1, -1) if reverse else range(T)


def _fold(a: np.ndarray) -> np.ndarray:
    """(T, R, N) -> (R, T*N): the steps side by side, for one GEMM over all steps (a copy)."""
    T, R, N = a.shape
    return a.transpose(1, 0, 2).reshape(R, T * N)


def _unfold_t(a: np.ndarray) -> np.ndarray:
    """(T, R, N) -> (T*N, R), contiguous (a copy): the right-hand side of a weight GEMM."""
    T, R, N = a.shape
    return a.transpose(0, 2, 1).reshape(T * N, R)


class _Prepared:
    """One direction's weights in the kernels' layout (see above)."""

    __slots__ = (
        "mode", "perm", "w_ih_t", "w_ih_s", "w_hh_t", "w_hh_s", "b", "b_hn", "w_hr", "w_cat",
    )  # fmt: skip

    def __init__(self, mode, H, w_ih, w_hh, b_ih, b_hh, w_hr):
        xm = array_module(w_ih)
        self.mode = mode
        perm = None
        # rows of the sigmoid gates, in kernel order
        sig = {"LSTM": slice(H, 4 * H), "GRU": slice(0, 2 * H)}.get(mode, slice(0, 0))
        if mode == "LSTM":  # (i, f, g, o) -> (g, f, i, o) (see _lstm_perm)
            perm = _lstm_perm(H)
            if xm is not np:
                perm = xm.asarray(perm)
            w_ih, w_hh = w_ih[perm], w_hh[perm]
        self.perm = perm
        self.w_ih_t = xm.ascontiguousarray(w_ih.T)  # (F, G*H): dL/dx = W_ih^T @ dA
        self.w_hh_t = xm.ascontiguousarray(w_hh.T)  # (H_out, G*H): dL/dh = W_hh^T @ dA
        self.w_ih_s = w_ih.copy()
        self.w_ih_s[sig] *= 0.5
        self.w_hh_s = w_hh.copy()
        self.w_hh_s[sig] *= 0.5
        self.b = self.b_hn = None
        if b_ih is not None:
            if mode == "GRU":
                b = b_ih.copy()
                b[: 2 * H] += b_hh[: 2 * H]  # r and z: both biases simply add
                self.b_hn = b_hh[2 * H :, None]  # n: b_hn sits inside r * (W_hn h + b_hn)
            else:
                b = b_ih + b_hh
                if perm is not None:
                    b = b[perm]
            b[sig] *= 0.5
            self.b = b[:, None]
        self.w_hr = w_hr
        self.w_cat = _stack_weights(self.w_hh_s, self.w_ih_s, self.b) if mode == "LSTM" else None

    def project(self, xt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every step's input pre-activations: (G*H, F) @ (T, F, N) -> (T, G*H, N), and the
        input the product read. With biases, that input is xt with a row of ones appended,
        (T, F+1, N), and the weights carry the bias as their last column: the bias rides in the
        GEMM (a copy of the F-row input is cheaper than a pass over the G*H-row output), and
        the weight gradient's last column is the bias gradient."""
        xm = array_module(xt)
        if self.b is None:
            return np.matmul(self.w_ih_s, xt), xt
        T, F, N = xt.shape
        xa = xm.empty((T, F + 1, N), dtype=xt.dtype)
        xa[:, :F] = xt
        xa[:, F] = 1
        w = xm.empty((self.w_ih_s.shape[0], F + 1), dtype=xt.dtype)
        w[:, :F] = self.w_ih_s
        w[:, F] = self.b[:, 0]
        return np.matmul(w, xa), xa

    def to_torch_order(self, d: np.ndarray) -> np.ndarray:
        """A gradient with gate rows in kernel order, back in PyTorch's order."""
        return d if self.perm is None else d[self.perm]


def _stack_weights(w_hh: np.ndarray, w_ih: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """The LSTM's per-step weights side by side, ``[W_hh | W_ih | b]``: (G*H, H_out + F (+ 1)).

    Each step is then one GEMM ``[W_hh | W_ih | b] @ [h; x_t; 1]`` (see ``_fill_lstm_rhs``): no
    separate input projection, no pass adding it to the recurrent product, and in backward the
    three weight gradients are one GEMM over all steps."""
    xm = array_module(w_hh)
    G, P = w_hh.shape
    F = w_ih.shape[1]
    w = xm.empty((G, P + F + (b is not None)), dtype=w_hh.dtype)
    w[:, :P] = w_hh
    w[:, P : P + F] = w_ih
    if b is not None:
        w[:, P + F] = b[:, 0]
    return w


def _sigmoid_fixup(s: np.ndarray) -> None:
    """tanh(x/2) -> sigmoid(x), in place."""
    s *= 0.5
    s += 0.5


def _rnn_forward(xp, h0, kw, mask, reverse, relu):
    T = xp.shape[0]
    hs = np.empty_like(xp)  # outputs (zero at padded steps)
    hs_prev = np.empty_like(xp)  # state entering each step (for dW_hh)
    h = h0
    for t in _order(T, reverse):
        hs_prev[t] = h
        a = hs[t]
        np.matmul(kw.w_hh_s, h, out=a)
        a += xp[t]
        if relu:
            np.maximum(a, 0, out=a)
        else:
            np.tanh(a, out=a)
        if mask is None:
            h = a
        else:
            a *= mask[0][t]
            h = a + h * mask[1][t]
    # at real steps hs holds the activation; at padded steps the gradient is masked to zero
    return hs, h, None, (hs, hs_prev, relu)


def _rnn_backward(cache, dout, dh, dc, kw, mask, reverse, wg):
    hs, hs_prev, relu = cache
    xm = array_module(hs)
    T, H, N = hs.shape
    dA = xm.empty((T, H, N), dtype=hs.dtype)  # time-major: each step writes a contiguous block
    for t in _order(T, not reverse):
        da = dA[t]
        if dout is None:
            np.copyto(da, dh)
        else:
            np.add(dout[t], dh, out=da)
        if mask is not None:
            passed = dh * mask[1][t]
            da *= mask[0][t]
        if relu:
            da *= hs[t] > 0
        else:
            da *= 1 - hs[t] * hs[t]  # d tanh = 1 - y^2
        wg.add(t, da)
        dh = kw.w_hh_t @ da
        if mask is not None:
            dh += passed
    return dA, dh, None, None


def _carve(xm, dtype, *shapes: tuple) -> list:
    """Arrays of the given shapes, all views of one allocation.

    A layer's per-call arrays live and die together (forward to backward). One block of the
    same size every call is reused by the allocator; several large blocks of different sizes
    were handed back to the OS and faulted in again page by page on every call (about 1300
    page faults per step in the LSTM classifier benchmark)."""
    sizes = [math.prod(shape) for shape in shapes]
    buf = xm.empty(sum(sizes), dtype=dtype)
    out, start = [], 0
    for shape, n in zip(shapes, sizes):
        out.append(buf[start : start + n].reshape(shape))
        start += n
    return out


def _fill_lstm_rhs(rhs, xt, h0, kw, reverse):
    """Every step's right-hand side ``[h; x_t; 1]`` in one array, rhs (T+1, H_out + F (+ 1), N).

    The step at t reads slot t + r and writes its new state h' into the first H_out rows of slot
    t + 1 - r (r = 1 when reversed), so x_t sits in slot t + r and every step's whole right-hand
    side is one contiguous (K, N) block: the previous state is never copied. Slot T * (1 - r)
    only ever holds the final state (its other rows are never read)."""
    T, F, N = xt.shape
    P = h0.shape[0]
    r = 1 if reverse else 0
    rhs[r : T + r, P : P + F] = xt
    if kw.b is not None:
        rhs[:, P + F] = 1
    rhs[T * r, :P] = h0
    return rhs


def _lstm_forward(xt, h0, c0, kw, mask, reverse, zero_init=False, own_output=False):
    """One LSTM direction over xt (T, F, N). Each step: one GEMM ``[W_hh | W_ih | b] @ [h; x; 1]``
    into the step's stacked gates (G*H, N), one tanh over them, then the cell update.

    Each step keeps one (6, H, N) block ``[c, g, f, i, o, tanh(c')]`` (c the cell state entering
    the step; the gates in kernel order). The order pairs what is multiplied together: c' =
    f*c + i*g is one product of blocks (c, g) and (f, i) and one sum, and in backward blocks
    (g, tanh(c')) pair with (i, o) (see _lstm_backward): fewer, larger element-wise calls."""
    xm = array_module(xt)
    T, F, N = xt.shape
    w = kw.w_cat
    G = w.shape[0]
    H = G // 4
    P = h0.shape[0]
    w_hr = kw.w_hr
    dtype = xt.dtype
    r = 1 if reverse else 0
    # rhs: each step's [h; x; 1] (see _fill_lstm_rhs); cells: the step blocks above, slots as
    # rhs (the step at t is slot t + r and writes c' into the c of slot t + 1 - r);
    # us: o*tanh(c') before the projection
    rhs, cells, us = _carve(
        xm, dtype, (T + 1, w.shape[1], N), (T + 1, 6, H, N),
        (T, H, N) if w_hr is not None else (0,),
    )  # fmt: skip
    _fill_lstm_rhs(rhs, xt, h0, kw, reverse)
    hst = rhs[:, :P]  # (T+1, P, N): the states, in time order
    cells[T * r, 0] = c0
    # outputs: the states themselves, unless padded steps make them differ (zero outputs) or
    # the caller gets them (own_output): then an array of their own, which a caller may write to
    own = own_output or mask is not None
    hs = xm.empty((T, P, N), dtype=dtype) if own else hst[1 - r : T + 1 - r]
    # the GEMM writes into this small reused array (it stays in cache), and the tanh moves the
    # step's gates into their block: one pass into the large array instead of the GEMM's writes
    z = xm.empty((4, H, N), dtype=dtype)
    z2 = z.reshape(G, N)
    fc_ig = xm.empty((2, H, N), dtype=dtype)  # (f*c, i*g)
    fc, ig = fc_ig
    # views of every step's block, taken once (the loop only indexes them): the four gates,
    # the sigmoid gates, (c, g) and (f, i), the cell state c, o, tanh(c')
    gates, sigs, cgs, fis, cs, os_, tcs = (
        cells[:, 1:5], cells[:, 2:5], cells[:, 0:2], cells[:, 2:4], cells[:, 0], cells[:, 4],
        cells[:, 5],
    )  # fmt: skip
    w_x, rhs_x = w[:, P:], rhs[:, P:]  # without the recurrent columns and rows
    first = zero_init
    fused = None
    if mask is None and w_hr is None:
        fused = elementwise(xm, LSTM_STEP_OWN if own else LSTM_STEP, dtype)
    if fused is not None:  # per step: one GEMM and one kernel (_recurrent_kernels.py)
        hn, K = H * N, w.shape[1]
        gemm, gemm_x = stepped_matmul(w, rhs, z2[None]), stepped_matmul(w_x, rhs_x, z2[None])
        for t in _order(T, reverse):
            k = t + r
            (gemm_x if first else gemm)(k, 0)
            first = False
            at = (k * 6 * hn, (t + 1 - r) * 6 * hn)  # this step's block, the next step's
            if own:
                fused(z, hn, *at, t * hn, (t + 1 - r) * K * N, cells, hs, rhs, size=hn)
            else:
                fused(z, hn, *at, (t + 1 - r) * K * N, cells, rhs, size=hn)
    for t in _order(T, reverse) if fused is None else ():
        k = t + r  # this step's slot
        if first:  # h0 = 0: the first step's recurrent product is zero, skip its columns
            np.matmul(w_x, rhs_x[k], out=z2)
            first = False
        else:
            np.matmul(w, rhs[k], out=z2)
        np.tanh(z, out=gates[k])  # sigmoid rows: tanh(x/2), the weights' rows are halved
        s = sigs[k]
        s *= 0.5  # sigmoid(x) = (1 + tanh(x/2)) / 2
        s += 0.5
        np.multiply(cgs[k], fis[k], out=fc_ig)  # (c, g) * (f, i)
        c_new = cs[t + 1 - r] if mask is None else fc
        np.add(fc, ig, out=c_new)  # c' = f*c + i*g
        tc = tcs[k]
        np.tanh(c_new, out=tc)
        h_new = hs[t]
        if w_hr is None:
            np.multiply(os_[k], tc, out=h_new)
        else:
            u = us[t]
            np.multiply(os_[k], tc, out=u)
            np.matmul(w_hr, u, out=h_new)  # (P, H) @ (H, N)
        if mask is None:
            if own:
                np.copyto(hst[t + 1 - r], h_new)
        else:  # padded steps pass the state through: s' = mf*new + keep*s
            mf, keep = mask[0][t], mask[1][t]
            h_new *= mf
            h = np.multiply(hst[t + r], keep, out=hst[t + 1 - r])
            h += h_new
            c_new *= mf
            c = np.multiply(cs[k], keep, out=cs[t + 1 - r])
            c += c_new
    # the cache: rhs[r : T + r] is every step's right-hand side, in step order
    end = T * (1 - r)  # the slot of the final state
    return hs, hst[end], cells[end, 0], (cells, rhs[r : T + r], us)


def _lstm_backward(cache, dout, dh, dc, kw, mask, reverse, wg, need_dh0=True, need_dA=True):
    """Backward through _lstm_forward. Returns (dL/d gate pre-activations (T, G*H, N) in kernel
    order, or None unless ``need_dA``; dL/dh0, dL/dc0 (None unless ``need_dh0``); dL/dW_hr)."""
    cells, _, us = cache
    xm = array_module(cells)
    T = cells.shape[0] - 1
    H, N = cells.shape[2:]
    G = 4 * H
    P = kw.w_hh_t.shape[0]
    w_hr = kw.w_hr
    dtype = cells.dtype
    r = 1 if reverse else 0
    # dL/d(gate pre-activations), time-major: each step writes a contiguous block. Kept for
    # all steps only when dL/dx needs them; the weight gradients take each step's as it comes.
    dA = xm.empty((T, 4, H, N), dtype=dtype) if need_dA else None
    da_buf = None if need_dA else xm.empty((4, H, N), dtype=dtype)
    dhs = xm.empty((T, P, N), dtype=dtype) if w_hr is not None else None  # dL/dh' (for dW_hr)
    sd = xm.empty((3, H, N), dtype=dtype)  # sigmoid' of f, i, o
    up = xm.empty((3, H, N), dtype=dtype)  # dL/df, dL/di, dL/do
    q = xm.empty((2, H, N), dtype=dtype)  # i (1 - g^2), o (1 - tanh(c')^2)
    tmp = xm.empty((H, N), dtype=dtype)
    g_buf = xm.empty((P, N), dtype=dtype)
    # views of every step's block, taken once (the loop only indexes them): c, g, f, i, o,
    # tanh(c') are blocks 0 to 5; (g, tanh(c')) pair with (i, o), (c, g) with (f, i)
    gts, ios, cgs, sigs, fs, tcs = (
        cells[:, 1::4], cells[:, 3:5], cells[:, 0:2], cells[:, 2:5], cells[:, 2], cells[:, 5],
    )  # fmt: skip
    q_g, q_o = q
    up_fi, up_o = up[:2], up[2]
    w_hh_t = kw.w_hh_t
    last = 0 if not reverse else T - 1  # the first step in time: its dL/dh may not be needed
    fused = None
    if mask is None and w_hr is None:
        fused = elementwise(xm, LSTM_STEP_BACK[dout is not None], dtype)
    if fused is not None:  # one kernel and one GEMM per step; the weight gradients at the end
        hn = H * N
        dA_all = dA if dA is not None else xm.empty((T, 4, H, N), dtype=dtype)
        dhs = xm.empty((2, P, N), dtype=dtype)  # dL/dh of the steps, alternating
        gemm = stepped_matmul(w_hh_t, dA_all.reshape(T, G, N), dhs)
        dh, dho, j = xm.ascontiguousarray(dh), 0, 0
        dc = xm.ascontiguousarray(dc)  # (this function's own: updated in place)
        grad_out = () if dout is None else (xm.ascontiguousarray(dout), 0)
        for t in _order(T, not reverse):
            if grad_out:
                grad_out = (grad_out[0], t * hn)
            fused(*grad_out, dh, dho, cells, hn, (t + r) * 6 * hn, t * 4 * hn, dA_all, dc,
                  size=hn)  # fmt: skip
            if t == last and not need_dh0:
                dh = dc = None
                break
            gemm(t, j)
            dh, dho, j = dhs, j * hn, 1 - j
        if dh is not None:
            dh = dhs[1 - j]
        wg.add_steps(dA_all.reshape(T, G, N))
        return (None if dA is None else dA.reshape(T, G, N)), dh, dc, None
    for t in _order(T, not reverse):
        da = da_buf if dA is None else dA[t]  # (4, H, N): g, f, i, o
        g_h = dh if dout is None else np.add(dout[t], dh, out=g_buf)  # dL/dh' (not mutated)
        if mask is not None:
            mf, keep = mask[0][t], mask[1][t]
            h_passed, c_passed = dh * keep, dc * keep
            g_h = g_h * mf
            dc = dc * mf
        if w_hr is not None:
            dhs[t] = g_h
            du = w_hr.T @ g_h  # back through the projection: (H, P) @ (P, N)
        else:
            du = g_h
        k = t + r  # this step's block
        # q = (i, o) * (1 - (g, tanh(c'))^2)
        gt = gts[k]
        np.multiply(gt, gt, out=q)
        np.subtract(1, q, out=q)
        q *= ios[k]
        # h' = o * tanh(c'):  dL/dc' += dh' * o * (1 - tanh(c')^2);  dL/do = dh' * tanh(c')
        np.multiply(du, q_o, out=tmp)
        dc += tmp  # dc is this function's own array (a copy, or f * dc from the step before)
        np.multiply(du, tcs[k], out=up_o)
        # c' = f*c + i*g:  (dL/df, dL/di) = dc' * (c, g);  dL/dg = dc' * i (1 - g^2)
        np.multiply(cgs[k], dc, out=up_fi)
        s = sigs[k]
        np.subtract(1, s, out=sd)
        sd *= s  # sigmoid' = s (1 - s)
        np.multiply(up, sd, out=da[1:])
        np.multiply(dc, q_g, out=da[0])
        dc *= fs[k]  # dL/dc = dc' * f
        da2 = da.reshape(G, N)
        wg.add(t, da2)
        if t == last and not need_dh0:
            dh = dc = None
            break
        dh = w_hh_t @ da2
        if mask is not None:
            dh += h_passed
            dc += c_passed
    dw_hr = None
    if w_hr is not None:
        # dL/dW_hr = sum_t dh'_t @ u_t^T: one GEMM over all steps
        dw_hr = _fold(dhs) @ _unfold_t(us)
    return (None if dA is None else dA.reshape(T, G, N)), dh, dc, dw_hr


def _gru_forward(xp, h0, kw, mask, reverse):
    xm = array_module(xp)
    T, G, N = xp.shape
    H = G // 3
    dtype = xp.dtype
    acts = np.empty_like(xp)  # r, z, n
    hhn = xm.empty((T, H, N), dtype=dtype)  # W_hn h + b_hn (r multiplies it)
    hs = xm.empty((T, H, N), dtype=dtype)
    hs_prev = xm.empty((T, H, N), dtype=dtype)
    hh = xm.empty((G, N), dtype=dtype)
    h = h0
    fused = None if mask is not None else elementwise(xm, GRU_STEP, dtype)
    if fused is not None:  # one GEMM and one kernel per step (_recurrent_kernels.py)
        hn, r = H * N, 1 if reverse else 0
        hbuf = xm.empty((T + 1, H, N), dtype=dtype)  # the states; step t reads slot t + r
        hbuf[T * r] = h0
        b = xm.zeros((H, N), dtype) if kw.b_hn is None else xm.broadcast_to(kw.b_hn, (H, N))
        b = xm.ascontiguousarray(b)
        gemm = stepped_matmul(kw.w_hh_s, hbuf, hh[None])
        for t in _order(T, reverse):
            gemm(t + r, 0)
            fused(xp, hh, b, hn, t * G * N, (t + r) * hn, (t + 1 - r) * hn, t * hn, acts, hhn,
                  hbuf, hs_prev, size=hn)  # fmt: skip
        return hbuf[1 - r : T + 1 - r], hbuf[T * (1 - r)], None, (acts, hhn, hs_prev)
    for t in _order(T, reverse):
        hs_prev[t] = h
        a = acts[t]
        np.matmul(kw.w_hh_s, h, out=hh)
        rz = a[: 2 * H]
        np.add(xp[t, : 2 * H], hh[: 2 * H], out=rz)
        np.tanh(rz, out=rz)
        _sigmoid_fixup(rz)
        r, z = a[:H], a[H : 2 * H]
        hn = hhn[t]
        if kw.b_hn is None:
            np.copyto(hn, hh[2 * H :])
        else:
            np.add(hh[2 * H :], kw.b_hn, out=hn)
        n = a[2 * H :]
        np.multiply(r, hn, out=n)
        n += xp[t, 2 * H :]
        np.tanh(n, out=n)
        h_new = hs[t]  # h' = (1 - z) * n + z * h = n + z * (h - n)
        np.subtract(h, n, out=h_new)
        h_new *= z
        h_new += n
        if mask is None:
            h = h_new
        else:
            h_new *= mask[0][t]
            h = h_new + h * mask[1][t]
    return hs, h, None, (acts, hhn, hs_prev)


def _gru_backward(cache, dout, dh, dc, kw, mask, reverse, wg):
    acts, hhn, hs_prev = cache
    xm = array_module(acts)
    T, G, N = acts.shape
    H = G // 3
    dtype = acts.dtype
    # gradients of the input pre-activations (and b_ih), and of W_hn h + b_hn (for r and z the
    # hidden part's gradient equals dxp's); time-major, each step writes contiguous blocks
    dxp = xm.empty((T, G, N), dtype=dtype)
    dhh = xm.empty((G, N), dtype=dtype)
    g_buf = xm.empty((H, N), dtype=dtype)
    tmp = xm.empty((H, N), dtype=dtype)
    sd = xm.empty((2 * H, N), dtype=dtype)
    fused = None if mask is not None else elementwise(xm, GRU_STEP_BACK[dout is not None], dtype)
    if fused is not None:  # one kernel and one GEMM per step; the weight gradients at the end
        hn = H * N
        dhh_all = xm.empty((T, G, N), dtype=dtype)
        gzs = xm.zeros((2, H, N), dtype=dtype)  # du z of the step before, and of this one
        dhs = xm.empty((2, H, N), dtype=dtype)  # dL/dh through the GEMM, alternating
        gemm = stepped_matmul(kw.w_hh_t, dhh_all, dhs)
        dh, dho, j, gp = xm.ascontiguousarray(dh), 0, 0, 0
        grad_out = () if dout is None else (xm.ascontiguousarray(dout), 0)
        for t in _order(T, not reverse):
            if grad_out:
                grad_out = (grad_out[0], t * hn)
            fused(*grad_out, dh, dho, acts, hhn, hs_prev, hn, t * G * N, t * hn, gp * hn,
                  (1 - gp) * hn, dxp, dhh_all, gzs, size=hn)  # fmt: skip
            gemm(t, j)
            dh, dho, j, gp = dhs, j * hn, 1 - j, 1 - gp
        dh = dhs[1 - j] + gzs[gp]  # the last step's: through the GEMM, and around it
        wg[0].add_steps(dxp)
        wg[1].add_steps(dhh_all)
        return dxp, dh, None, None
    for t in _order(T, not reverse):
        g = dh if dout is None else np.add(dout[t], dh, out=g_buf)  # dL/dh' (not mutated)
        if mask is not None:
            passed = dh * mask[1][t]
            g = g * mask[0][t]
        a = acts[t]
        r, z, n = a[:H], a[H : 2 * H], a[2 * H :]
        dx = dxp[t]
        # through h' = n + z (h - n), then n = tanh(.): dn_pre = g (1 - z) (1 - n^2)
        dn = dx[2 * H :]
        np.multiply(n, n, out=dn)
        np.subtract(1, dn, out=dn)
        np.subtract(1, z, out=tmp)
        dn *= tmp
        dn *= g
        # dL/dr = dn_pre * (W_hn h + b_hn);  dL/dz = g * (h - n)
        np.multiply(dn, hhn[t], out=dx[:H])
        np.subtract(hs_prev[t], n, out=dx[H : 2 * H])
        dx[H : 2 * H] *= g
        s = a[: 2 * H]
        np.subtract(1, s, out=sd)
        sd *= s
        dx[: 2 * H] *= sd
        # the hidden side: the same r and z rows; the n rows are r * dn_pre
        np.copyto(dhh[: 2 * H], dx[: 2 * H])
        np.multiply(dx[2 * H :], r, out=dhh[2 * H :])
        wg[0].add(t, dx)
        wg[1].add(t, dhh)
        dh = kw.w_hh_t @ dhh
        np.multiply(g, z, out=tmp)
        dh += tmp
        if mask is not None:
            dh += passed
    return dxp, dh, None, None


def _direction_forward(mode, kw, xt, h0, c0, mask, reverse, zero_init=False, own_output=False):
    """One direction of one layer on xt (T, F, N): returns (output (T, H_out, N), h_T, c_T,
    cache), states (H, N). ``zero_init``: h0 (and c0) are zeros, the first recurrent product
    is skipped. ``own_output``: the output goes to the caller, who may write to it, so it must
    share no memory with the cache."""
    if mode == "LSTM":  # the input projection rides in each step's GEMM (see _stack_weights)
        hs, hT, cT, cache = _lstm_forward(xt, h0, c0, kw, mask, reverse, zero_init, own_output)
        return hs, hT, cT, (cache, None, zero_init)
    xp, xa = kw.project(xt)
    if mode == "GRU":  # its outputs are an array of their own already
        hs, hT, cT, cache = _gru_forward(xp, h0, kw, mask, reverse)
    else:
        hs, hT, cT, cache = _rnn_forward(xp, h0, kw, mask, reverse, mode == "RNN_RELU")
        if own_output:  # backward reads the activations hs
            hs = hs.copy()
    return hs, hT, cT, (cache, xa, zero_init)


class _WeightGrads:
    """sum_t dA_t @ rhs_t^T for right-hand sides (T, C, N) (the state before each step, the
    step's input), fed one step's (R, N) gate gradient at a time, in any step order.

    Steps are gathered in blocks of k steps, (R, k*N) with k*N about 512, which stay in cache:
    each full block is one GEMM per right-hand side with k*N columns. A GEMM per step (N
    columns) runs far below BLAS's speed, and folding the whole sequence at once is a strided
    copy through memory."""

    def __init__(self, rows: int, rhs: list, dtype):
        xm = array_module(rhs[0])
        T, _, N = rhs[0].shape
        self.k = max(1, min(T, 512 // max(N, 1)))
        self.T, self.N = T, N
        self.rhs = rhs
        self.block = xm.empty((rows, self.k * N), dtype=dtype)
        self.grads = [xm.zeros((rows, r.shape[1]), dtype=dtype) for r in rhs]
        self.current = None  # the block being filled

    def add(self, t: int, da: np.ndarray) -> None:
        b = t // self.k
        if b != self.current:
            self.flush()
            self.current = b
        j = (t - b * self.k) * self.N
        self.block[:, j : j + self.N] = da

    def add_steps(self, da: np.ndarray) -> None:
        """Every step's gradient at once, da (T, R, N): one GEMM per right-hand side over all
        steps (on a GPU, where per-step launches cost more than the copies of a fold)."""
        folded = _fold(da)
        for r, grad in zip(self.rhs, self.grads):
            grad += folded @ _unfold_t(r)

    def flush(self) -> list:
        b, self.current = self.current, None
        if b is not None:
            t0 = b * self.k
            t1 = min(t0 + self.k, self.T)
            blk = self.block[:, : (t1 - t0) * self.N]
            for r, grad in zip(self.rhs, self.grads):
                part = r[t0:t1]  # (m, C, N) -> (C, m*N), in cache
                grad += blk @ part.transpose(1, 0, 2).reshape(part.shape[1], -1).T
        return self.grads


def _direction_backward(mode, kw, cache, xt, dout, dh, dc, mask, reverse, need_dx, need_dh0=True):
    """Backward through one direction. dout: (T, H_out, N) or None (zeros); dh, dc: gradients
    of the final state (H, N) (not mutated). Returns (dL/dxt (T, F, N) or None, dL/dh0 (None
    unless ``need_dh0``), dL/dc0, grads) with grads the weight gradients by base name, gate rows
    in PyTorch's order."""
    if mode == "LSTM":
        return _lstm_direction_backward(
            kw, cache[0], xt, dout, dh, dc, mask, reverse, need_dx, need_dh0
        )
    cache, xa, zero_init = cache
    xm = array_module(xa)
    G = kw.w_ih_s.shape[0]
    dtype = xa.dtype
    hs_prev = cache[{"GRU": 2}.get(mode, 1)]
    # the weight gradients, summed over the steps as the kernels go (see _WeightGrads); with
    # biases the input's last row is ones, so dW_ih's last column is the bias gradient
    if mode == "GRU":  # the hidden side differs in the new gate's rows (r * dn, not dn)
        hidden = [hs_prev]
        if kw.b is not None:  # a row of ones: the hidden bias gradient
            hidden.append(xm.ones((hs_prev.shape[0], 1, hs_prev.shape[2]), dtype=dtype))
        wg = _WeightGrads(G, [xa], dtype), _WeightGrads(G, hidden, dtype)
    else:
        wg = _WeightGrads(G, [hs_prev, xa], dtype)
    if mode == "GRU":
        dxp, dh0, dc0, dw_hr = _gru_backward(cache, dout, dh, dc, kw, mask, reverse, wg)
    else:
        dxp, dh0, dc0, dw_hr = _rnn_backward(cache, dout, dh, dc, kw, mask, reverse, wg)
    if mode == "GRU":
        (dw_ih,), (dw_hh, *db_hh) = wg[0].flush(), wg[1].flush()
    else:
        dw_hh, dw_ih = wg.flush()
    F = xt.shape[1]
    grads = {"weight_ih": kw.to_torch_order(dw_ih[:, :F])}
    grads["weight_hh"] = kw.to_torch_order(dw_hh)
    if kw.b is not None:
        grads["bias_ih"] = kw.to_torch_order(dw_ih[:, F])
        if mode == "GRU":
            grads["bias_hh"] = db_hh[0][:, 0]
        else:
            grads["bias_hh"] = grads["bias_ih"]
    dx = None
    if need_dx:  # (F, G*H) @ (T, G*H, N) -> (T, F, N)
        dx = np.matmul(kw.w_ih_t, dxp)
    return dx, dh0, dc0, grads


def _lstm_direction_backward(kw, cache, xt, dout, dh, dc, mask, reverse, need_dx, need_dh0):
    """_direction_backward for the LSTM: the weight gradients are one sum over the steps,
    dL/d[W_hh | W_ih | b] = sum_t dA_t @ [h; x_t; 1]^T, split afterwards into the three."""
    rhs = cache[1]  # (T, K, N): each step's [h; x_t; 1]
    G = kw.w_cat.shape[0]
    wg = _WeightGrads(G, [rhs], rhs.dtype)
    dA, dh0, dc0, dw_hr = _lstm_backward(
        cache, dout, dh, dc.copy(), kw, mask, reverse, wg, need_dh0, need_dx
    )
    (dw,) = wg.flush()  # (G*H, K), gate rows in kernel order
    P, F = kw.w_hh_t.shape[0], xt.shape[1]
    grads = {
        "weight_hh": kw.to_torch_order(dw[:, :P]),
        "weight_ih": kw.to_torch_order(dw[:, P : P + F]),
    }
    if kw.b is not None:  # b = b_ih + b_hh: both get the same gradient
        grads["bias_ih"] = kw.to_torch_order(dw[:, P + F])
        grads["bias_hh"] = grads["bias_ih"]
    if dw_hr is not None:
        grads["weight_hr"] = dw_hr
    dx = None
    if need_dx:  # (F, G*H) @ (T, G*H, N) -> (T, F, N)
        dx = np.matmul(kw.w_ih_t, dA)
    return dx, dh0, dc0, grads


# ---------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------


def _init_param(shape, bound, rng, dtype) -> Parameter:
    return Parameter(uniform(shape, -bound, bound, rng=rng, dtype=dtype))


def _lengths_mask(who, lengths, T: int, N: int, dtype, xm=np):
    """(mf, keep) float masks (T, 1, N) from per-sequence lengths, or None."""
    if lengths is None:
        return None
    lengths = np.asarray(to_numpy(lengths))  # checked and compared on the host
    if (
        lengths.shape != (N,)
        or lengths.dtype.kind not in "iu"
        or (N and (lengths.min() < 0 or lengths.max() > T))
    ):
        got = f"shape {fmt_shape(lengths.shape)}, dtype {lengths.dtype}"
        if lengths.shape == (N,) and lengths.dtype.kind in "iu":
            got = f"values in [{lengths.min()}, {lengths.max()}]"
        raise ValueError(expected_got(who, f"integer lengths of shape ({N},) in [0, {T}]", got))
    mf = (np.arange(T)[:, None] < lengths[None, :]).astype(dtype)[:, None, :]
    if xm is not np:
        mf = xm.asarray(mf)
    return mf, 1 - mf


# ---------------------------------------------------------------------------------------------
# sequence layers
# ---------------------------------------------------------------------------------------------


class _SequenceSpec(InputSpec):
    """A recurrent layer's input: (N, T, F), or (T, N, F) with ``batch_first=False``; unbatched
    (T, F) either way (PyTorch's rule), with the states (L * D, H) losing their batch axis 1."""

    def __init__(self):
        super().__init__(("N", "T", "F"), axis=-1, size="input_size")

    keyword_inputs = {"hx": 1}

    def layouts(self, module):
        return (("N", "T", "F"),) if module.batch_first else (("T", "N", "F"),)

    def batch_axes(self, module):
        b = 0 if module.batch_first else 1
        state = (1, 1) if module.mode == "LSTM" else 1  # (h, c) or h: (L * D, N, H)
        return (b, state), (b, state)


class _CellSpec(InputSpec):
    """A cell's input: (N, F), unbatched (F,); the state(s) and output(s) lose axis 0 too."""

    def __init__(self):
        super().__init__(("N", "F"), axis=1, size="input_size")

    keyword_inputs = {"h": 1, "hx": 1}

    def batch_axes(self, module):
        if module.mode == "LSTM":  # forward(x, (h, c)) -> (h', c')
            return (0, (0, 0)), (0, 0)
        return (0, 0), 0


class _RNNBase(Module):
    """Shared machinery of RNN, LSTM and GRU (parameters, layers, directions, lengths)."""

    input_spec = _SequenceSpec()

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        bias: bool,
        batch_first: bool,
        dropout: float,
        bidirectional: bool,
        proj_size: int,
        rng,
        dtype,
    ):
        super().__init__()
        who = type(self).__name__
        check_size(who, "input_size", input_size)
        check_size(who, "hidden_size", hidden_size)
        check_size(who, "num_layers", num_layers)
        check_hyper(who, "dropout", dropout, 0 <= dropout < 1, "must be in [0, 1)")
        check_hyper(
            who, "proj_size", proj_size, 0 <= proj_size < hidden_size, "must be in [0, hidden_size)"
        )
        self.mode = mode
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.proj_size = int(proj_size)
        self.rng = get_rng(rng)  # initial weights, then the dropout masks between layers
        num_dir = 2 if bidirectional else 1
        gates = _GATES[mode] * hidden_size
        out_size = proj_size or hidden_size
        bound = 1.0 / math.sqrt(hidden_size)  # PyTorch: U(-1/sqrt(H), 1/sqrt(H)) for all
        self._names = []  # per (layer, direction): the parameter names
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else out_size * num_dir
            for d in range(num_dir):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                names = {}
                shapes = [("weight_ih", (gates, layer_in)), ("weight_hh", (gates, out_size))]
                if bias:
                    shapes += [("bias_ih", (gates,)), ("bias_hh", (gates,))]
                if proj_size:
                    shapes += [("weight_hr", (proj_size, hidden_size))]
                for base, shape in shapes:
                    setattr(self, base + sfx, _init_param(shape, bound, self.rng, dtype))
                    names[base] = base + sfx
                self._names.append(names)

    # ------------------------------------------------------------------ helpers
    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.mode == "RNN_RELU":
            s += ", nonlinearity='relu'"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if not self.batch_first:
            s += ", batch_first=False"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        return s

    def _p(self, k: int, base: str):
        name = self._names[k].get(base)
        return None if name is None else getattr(self, name)

    def _state_shapes(self, N: int):
        L = self.num_layers * self.num_directions
        return (L, N, self.proj_size or self.hidden_size), (L, N, self.hidden_size)

    def _check_state(self, value, shape, name: str, dtype):
        value = as_float_input(self, value, dtype)
        if value.shape != shape:
            raise ShapeError(
                expected_got(self, f"{name} of shape {fmt_shape(shape)}", fmt_shape(value.shape))
            )
        return value

    def _parse_state(self, hx, N: int, dtype):
        xm = array_module(self.weight_ih_l0.data)
        h_shape, c_shape = self._state_shapes(N)
        if hx is None:
            h0 = xm.zeros(h_shape, dtype=dtype)
            c0 = xm.zeros(c_shape, dtype=dtype) if self.mode == "LSTM" else None
            return h0, c0
        if self.mode == "LSTM":
            if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise TypeError(expected_got(self, "an initial state (h0, c0)", type(hx).__name__))
            return (
                self._check_state(hx[0], h_shape, "h0", dtype),
                self._check_state(hx[1], c_shape, "c0", dtype),
            )
        return self._check_state(hx, h_shape, "h0", dtype), None

    # ------------------------------------------------------------------ forward
    def _prepared(self, k: int) -> _Prepared:
        p = {base: getattr(self, name).data for base, name in self._names[k].items()}
        return _Prepared(
            self.mode, self.hidden_size, p["weight_ih"], p["weight_hh"], p.get("bias_ih"),
            p.get("bias_hh"), p.get("weight_hr"),
        )  # fmt: skip

    def forward(self, x, hx=None, *, lengths=None):
        """Runs the whole sequence.

        Args:
            x: (N, T, input_size) with batch_first (the default), else (T, N, input_size).
            hx: the initial state, zeros if None: h0 of shape (num_layers * num_directions,
                N, H_out) (for the LSTM a tuple (h0, c0), c0 of shape (..., N, hidden_size)).
            lengths: optional integer array (N,): sequence i has ``lengths[i]`` real steps, the
                rest is padding. Padded steps leave the state unchanged, output zeros and
                receive no gradient.

        Returns:
            (output, h_n), or (output, (h_n, c_n)) for the LSTM. output is (N, T, D * H_out)
            (time-major when batch_first=False), the directions concatenated on the last axis.
        """
        dtype = self.weight_ih_l0.data.dtype
        x = as_float_input(self, x, dtype)  # (N, T, F) or (T, N, F): checked by input_spec
        xm = array_module(x)
        # feature-major (T, F, N) inside the stack (see the kernels' note)
        xt = xm.ascontiguousarray(
            x.transpose(1, 2, 0) if self.batch_first else x.transpose(0, 2, 1)
        )
        T, _, N = xt.shape
        mask = _lengths_mask(self, lengths, T, N, dtype, xm)
        h0, c0 = self._parse_state(hx, N, dtype)
        h_shape, c_shape = self._state_shapes(N)
        h_n = xm.empty(h_shape, dtype=dtype)
        c_n = xm.empty(c_shape, dtype=dtype) if self.mode == "LSTM" else None
        D = self.num_directions
        layer_in = xt
        layers = []  # per layer: (input, dropout mask, per direction (weights, cache))
        for layer in range(self.num_layers):
            drop = None
            if layer > 0 and self.dropout and self.training:
                keep_p = 1.0 - self.dropout
                u = random_generator(xm, self.rng).random(layer_in.shape)
                drop = (u < keep_p).astype(dtype)
                drop /= dtype.type(keep_p)
                layer_in = layer_in * drop
            outs, dirs = [], []
            for d in range(D):
                k = layer * D + d
                kw = self._prepared(k)
                c0k = None if c0 is None else xm.ascontiguousarray(c0[k].T)
                out, hT, cT, cache = _direction_forward(
                    self.mode,
                    kw,
                    layer_in,
                    xm.ascontiguousarray(h0[k].T),
                    c0k,
                    mask,
                    d == 1,
                    zero_init=hx is None,
                    own_output=D == 1 and layer == self.num_layers - 1,
                )
                h_n[k] = hT.T
                if c_n is not None:
                    c_n[k] = cT.T
                outs.append(out)
                dirs.append((kw, cache))
            layers.append((layer_in, drop, dirs))
            layer_in = outs[0] if D == 1 else np.concatenate(outs, axis=1)
        # The output is a transposed view of the last layer's (T, H_out, N) states, as PyTorch's
        # batch_first output is a transposed view: no (N, T, H) copy that callers reading only
        # h_n would pay for. It shares no memory with the saved state (a caller may write to
        # it): the kernels were asked for an output of its own (own_output), and two
        # directions are concatenated into a new array.
        output = layer_in.transpose(2, 0, 1) if self.batch_first else layer_in.transpose(0, 2, 1)
        self.save_for_backward(layers, mask, hx is not None, output.shape, T, N)
        return output, ((h_n, c_n) if self.mode == "LSTM" else h_n)

    # ------------------------------------------------------------------ backward
    def backward(self, grad_output):
        """Backpropagation through time.

        Args:
            grad_output: one gradient per output, ``(dL/doutput, dL/dh_n)`` (LSTM:
                ``(dL/doutput, (dL/dh_n, dL/dc_n))``); any of them may be None (no gradient).
                A bare array is dL/doutput alone (the final state gets none).

        Returns:
            dL/dx of the input's shape; when forward was given an initial state, the tuple
            ``(dL/dx, dL/dh0)`` (LSTM: ``(dL/dx, (dL/dh0, dL/dc0))``). dL/dx is None when
            ``needs_input_grad`` is False.
        """
        layers, mask, had_state, out_shape, T, N = self.saved
        grad_state = None
        if isinstance(grad_output, (tuple, list)):  # one gradient per output
            if len(grad_output) != 2:
                got = f"{len(grad_output)} items"
                raise TypeError(expected_got(self, "grad_output (grad_output, grad_h_n)", got))
            grad_output, grad_state = grad_output
        dtype = self.weight_ih_l0.data.dtype
        xm = array_module(self.weight_ih_l0.data)
        D = self.num_directions
        h_shape, c_shape = self._state_shapes(N)
        if grad_output is None:
            g = None  # the kernels skip the output-gradient term
        else:
            if getattr(grad_output, "shape", None) != out_shape:
                got = fmt_shape(grad_output.shape) if hasattr(grad_output, "shape") else "no array"
                raise ShapeError(
                    expected_got(
                        self, f"grad_output of the output's shape {fmt_shape(out_shape)}", got
                    )
                )
            g = (
                grad_output.transpose(1, 2, 0)
                if self.batch_first
                else grad_output.transpose(0, 2, 1)
            )
            g = xm.ascontiguousarray(g, dtype=dtype)
        gh, gc = self._parse_grad_state(grad_state, h_shape, c_shape)
        dh0 = xm.zeros(h_shape, dtype=dtype)
        dc0 = xm.zeros(c_shape, dtype=dtype) if self.mode == "LSTM" else None
        zeros = xm.zeros(h_shape[:0:-1], dtype=dtype)  # (H_out, N)
        zeros_c = xm.zeros(c_shape[:0:-1], dtype=dtype)
        H_out = self.proj_size or self.hidden_size
        for layer in range(self.num_layers - 1, -1, -1):
            layer_in, drop, dirs = layers[layer]
            need_dx = layer > 0 or self.needs_input_grad
            d_in = None
            for d in range(D):
                k = layer * D + d
                kw, cache = dirs[d]
                dout = g if D == 1 or g is None else g[:, d * H_out : (d + 1) * H_out]
                dh = zeros if gh is None else xm.ascontiguousarray(gh[k].T, dtype=dtype)
                dc = None
                if self.mode == "LSTM":
                    dc = zeros_c if gc is None else xm.ascontiguousarray(gc[k].T, dtype=dtype)
                dx, dh0k, dc0k, grads = _direction_backward(
                    self.mode,
                    kw,
                    cache,
                    layer_in,
                    dout,
                    dh,
                    dc,
                    mask,
                    d == 1,
                    need_dx,
                    need_dh0=had_state,
                )
                if had_state:
                    dh0[k] = dh0k.T
                    if dc0 is not None:
                        dc0[k] = dc0k.T
                for base, value in grads.items():
                    p = getattr(self, self._names[k][base])
                    if p.requires_grad:
                        p.grad += value
                if need_dx:
                    d_in = dx if d_in is None else d_in + dx
            if not need_dx:
                g = None
                break
            g = d_in
            if drop is not None:
                g *= drop
        if g is None:
            grad_x = None
        else:
            grad_x = xm.ascontiguousarray(
                g.transpose(2, 0, 1) if self.batch_first else g.transpose(0, 2, 1)
            )
        if not had_state:
            return grad_x
        return grad_x, ((dh0, dc0) if self.mode == "LSTM" else dh0)

    def _parse_grad_state(self, grad_state, h_shape, c_shape):
        if grad_state is None:
            return None, None
        if self.mode == "LSTM":
            if not (isinstance(grad_state, (tuple, list)) and len(grad_state) == 2):
                got = type(grad_state).__name__
                raise TypeError(expected_got(self, "grad_state (grad_h_n, grad_c_n)", got))
            gh, gc = grad_state
        else:
            gh, gc = grad_state, None
        for value, shape, name in ((gh, h_shape, "grad_h_n"), (gc, c_shape, "grad_c_n")):
            if value is not None and getattr(value, "shape", None) != shape:
                got = fmt_shape(value.shape) if hasattr(value, "shape") else type(value).__name__
                raise ShapeError(expected_got(self, f"{name} of shape {fmt_shape(shape)}", got))
        return gh, gc


class RNN(_RNNBase):
    """Elman RNN: ``h' = tanh(x @ W_ih^T + b_ih + h @ W_hh^T + b_hh)`` (or relu), stacked and
    optionally bidirectional, with PyTorch's parameter names and layouts.

    Args:
        input_size: features per step.
        hidden_size: features of the hidden state.
        num_layers: stacked layers; layer l > 0 takes the previous layer's output.
        nonlinearity: 'tanh' or 'relu'.
        bias: learn ``bias_ih_l{k}`` and ``bias_hh_l{k}``.
        batch_first: input and output are (N, T, F) (default) instead of (T, N, F).
        dropout: dropout probability on the outputs of every layer but the last (training only).
        bidirectional: also run each layer backwards in time (``..._reverse`` parameters);
            the two outputs are concatenated on the feature axis.
        device: PyTorch's device: None or 'cpu' (nnframe's arrays live in main memory); any
            other device is refused.
        dtype: parameter dtype (None: float32).
        rng: Generator or seed for the initial weights and the dropout masks.

    Parameters are ``weight_ih_l{k}`` (H, F_in), ``weight_hh_l{k}`` (H, H), ``bias_ih_l{k}``,
    ``bias_hh_l{k}`` (H,), plus ``..._reverse`` when bidirectional, all U(-1/sqrt(H), 1/sqrt(H)).

    Shape:
        input: (N, T, input_size) (batch_first) or (T, N, input_size).
        h0, h_n: (num_layers * num_directions, N, hidden_size).
        output: (N, T, num_directions * hidden_size) (or time-major).

    ``forward(x, h0=None, lengths=None)`` returns ``(output, h_n)``; ``backward(grad_output,
    grad_h_n=None)`` returns dL/dx, or ``(dL/dx, dL/dh0)`` when an initial state was given.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> rnn = nf.RNN(3, 5, num_layers=2, rng=0)
        >>> out, h_n = rnn(np.zeros((4, 7, 3), dtype=np.float32))
        >>> out.shape, h_n.shape
        ((4, 7, 5), (2, 4, 5))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=np.float32,
        *,
        rng=None,
    ):
        check_device("RNN", device)
        check_hyper(
            "RNN",
            "nonlinearity",
            nonlinearity,
            nonlinearity in ("tanh", "relu"),
            "'tanh' or 'relu'",
        )
        self.nonlinearity = nonlinearity
        super().__init__(
            "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU",
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, 0,
            rng, resolve_dtype(dtype),
        )  # fmt: skip


class LSTM(_RNNBase):
    """Long short-term memory, stacked and optionally bidirectional, with PyTorch's parameter
    names, layouts and gate order (input, forget, cell, output).

    ``c' = f*c + i*g``, ``h' = o*tanh(c')``; with ``proj_size`` P > 0 the hidden state is
    projected, ``h' = (o*tanh(c')) @ weight_hr^T``, and has P features.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, device,
            dtype, rng: as for :class:`RNN`.
        proj_size: size of the projected hidden state (0: no projection).

    Parameters are ``weight_ih_l{k}`` (4H, F_in), ``weight_hh_l{k}`` (4H, H_out),
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (4H,), ``weight_hr_l{k}`` (P, H) with proj_size, and
    ``..._reverse`` when bidirectional (H_out = P if proj_size else H).

    Shape:
        input: (N, T, input_size) (batch_first) or (T, N, input_size).
        h0, h_n: (num_layers * num_directions, N, H_out).
        c0, c_n: (num_layers * num_directions, N, hidden_size).
        output: (N, T, num_directions * H_out).

    ``forward(x, (h0, c0)=None, lengths=None)`` returns ``(output, (h_n, c_n))``;
    ``backward((grad_output, (grad_h_n, grad_c_n)))`` returns dL/dx, or
    ``(dL/dx, (dL/dh0, dL/dc0))`` when an initial state was given.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> lstm = nf.LSTM(3, 8, bidirectional=True, rng=0)
        >>> out, (h_n, c_n) = lstm(np.zeros((4, 6, 3), dtype=np.float32), lengths=[6, 5, 2, 1])
        >>> out.shape, h_n.shape, c_n.shape
        ((4, 6, 16), (2, 4, 8), (2, 4, 8))
        >>> grad_x = lstm.backward(np.ones_like(out))
        >>> grad_x.shape
        (4, 6, 3)
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=np.float32,
        *,
        rng=None,
    ):
        check_device("LSTM", device)
        super().__init__(
            "LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
            bidirectional, proj_size, rng, resolve_dtype(dtype),
        )  # fmt: skip


class GRU(_RNNBase):
    """Gated recurrent unit, stacked and optionally bidirectional, with PyTorch's parameter
    names, layouts and gate order (reset, update, new).

    ``r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)``, ``z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)``,
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, ``h' = (1 - z) * n + z * h``.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, device,
            dtype, rng: as for :class:`RNN`.

    Parameters are ``weight_ih_l{k}`` (3H, F_in), ``weight_hh_l{k}`` (3H, H), ``bias_ih_l{k}``,
    ``bias_hh_l{k}`` (3H,), and ``..._reverse`` when bidirectional.

    Shape:
        input: (N, T, input_size) (batch_first) or (T, N, input_size).
        h0, h_n: (num_layers * num_directions, N, hidden_size).
        output: (N, T, num_directions * hidden_size).

    ``forward`` and ``backward`` as for :class:`RNN`.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> gru = nf.GRU(3, 4, rng=0)
        >>> out, h_n = gru(np.ones((2, 5, 3), dtype=np.float32))
        >>> bool(np.allclose(out[:, -1], h_n[0]))
        True
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=np.float32,
        *,
        rng=None,
    ):
        check_device("GRU", device)
        super().__init__(
            "GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
            bidirectional, 0, rng, resolve_dtype(dtype),
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# cells: one time step, for hand-written loops
# ---------------------------------------------------------------------------------------------


class _CellBase(Module):
    """One step of a recurrent layer.

    A cell is called once per time step. Like every module it keeps one saved entry per call
    (see ``Module.save_for_backward``), so a hand-written loop backpropagates by calling
    ``backward`` once per step in reverse order. In eval mode a call at the top level keeps only
    the latest step; ``clear_saved()`` forgets every step (after a forward-only pass in training
    mode).
    """

    input_spec = _CellSpec()

    def __init__(self, mode, input_size, hidden_size, bias, rng, dtype):
        super().__init__()
        who = type(self).__name__
        check_size(who, "input_size", input_size)
        check_size(who, "hidden_size", hidden_size)
        self.mode = mode
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        gates = _GATES[mode] * hidden_size
        bound = 1.0 / math.sqrt(hidden_size)
        rng = get_rng(rng)
        self.weight_ih = _init_param((gates, input_size), bound, rng, dtype)
        self.weight_hh = _init_param((gates, hidden_size), bound, rng, dtype)
        self.bias_ih = _init_param((gates,), bound, rng, dtype) if bias else None
        self.bias_hh = _init_param((gates,), bound, rng, dtype) if bias else None

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias_ih is None:
            s += ", bias=False"
        if self.mode == "RNN_RELU":
            s += ", nonlinearity='relu'"
        return s

    # RNNCell and GRUCell: one state h (LSTMCell overrides both for (h, c))
    def forward(self, x, h=None):
        return self._step(x, h, None)[0]

    def backward(self, grad_output):
        dx, dh, _, had_state = self._back(grad_output, None)
        return (dx, dh) if had_state else dx

    def _check_state(self, value, name, N, dtype):
        value = as_float_input(self, value, dtype)
        if value.shape != (N, self.hidden_size):
            raise ShapeError(
                expected_got(
                    self, f"{name} of shape ({N}, {self.hidden_size})", fmt_shape(value.shape)
                )
            )
        return value

    def _step(self, x, h, c):
        dtype = self.weight_ih.data.dtype
        x = as_float_input(self, x, dtype)  # (N, input_size): checked by input_spec
        xm = array_module(x)
        N = x.shape[0]
        had_state = h is not None
        zeros = xm.zeros((N, self.hidden_size), dtype=dtype)
        h = zeros if h is None else self._check_state(h, "h", N, dtype)
        if self.mode == "LSTM":
            c = zeros if c is None else self._check_state(c, "c", N, dtype)
        b_ih, b_hh = self.bias_ih, self.bias_hh
        kw = _Prepared(
            self.mode, self.hidden_size, self.weight_ih.data, self.weight_hh.data,
            None if b_ih is None else b_ih.data, None if b_hh is None else b_hh.data, None,
        )  # fmt: skip
        xt = xm.ascontiguousarray(x.T)[None]  # (1, F, N): the kernels' feature-major layout
        hT = xm.ascontiguousarray(h.T)
        cT = None if c is None else xm.ascontiguousarray(c.T)
        _, h_new, c_new, cache = _direction_forward(self.mode, kw, xt, hT, cT, None, False)
        self.save_for_backward(xt, kw, cache, had_state)
        return h_new.T.copy(), (None if c_new is None else c_new.T.copy())

    def _back(self, dh, dc):
        xt, kw, cache, had_state = self.saved
        N, H = xt.shape[2], self.hidden_size
        for value, name in ((dh, "grad_h"), (dc, "grad_c")):
            if value is not None and getattr(value, "shape", None) != (N, H):
                got = fmt_shape(value.shape) if hasattr(value, "shape") else type(value).__name__
                raise ShapeError(expected_got(self, f"{name} of shape ({N}, {H})", got))
        dtype = self.weight_ih.data.dtype
        xm = array_module(xt)
        zeros = xm.zeros((H, N), dtype=dtype)
        dout = (zeros if dh is None else xm.ascontiguousarray(dh.T, dtype=dtype))[None]
        if self.mode == "LSTM":
            dc = zeros if dc is None else xm.ascontiguousarray(dc.T, dtype=dtype)
        dx, dh_prev, dc_prev, grads = _direction_backward(
            self.mode, kw, cache, xt, dout, zeros, dc, None, False, True
        )
        for base, value in grads.items():
            p = getattr(self, base)
            if p.requires_grad:
                p.grad += value
        dc_prev = None if dc_prev is None else dc_prev.T.copy()
        return dx[0].T.copy(), dh_prev.T.copy(), dc_prev, had_state


class RNNCell(_CellBase):
    """One step of an Elman RNN: ``h' = tanh(x @ W_ih^T + b_ih + h @ W_hh^T + b_hh)``.

    Args:
        input_size: features of the input.
        hidden_size: features of the hidden state.
        bias: learn ``bias_ih`` and ``bias_hh``.
        nonlinearity: 'tanh' or 'relu'.
        device: None or 'cpu' (any other device is refused); dtype: parameter dtype (None:
            float32); rng: initial-weight generator (or seed).

    Shape:
        input: (N, input_size).    h, output: (N, hidden_size).

    ``forward(x, h=None)`` returns h'; ``backward(grad_h')`` returns dL/dx, or
    ``(dL/dx, dL/dh)`` when h was given. Calls stack: see the note on hand-written loops in
    docs/sequences.md (each backward undoes the latest forward).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> cell = nf.RNNCell(3, 4, rng=0)
        >>> h = None
        >>> for t in range(5):
        ...     h = cell(np.ones((2, 3), dtype=np.float32), h)
        >>> h.shape
        (2, 4)
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device=None,
        dtype=np.float32,
        *,
        rng=None,
    ):
        check_device("RNNCell", device)
        check_hyper(
            "RNNCell", "nonlinearity", nonlinearity, nonlinearity in ("tanh", "relu"),
            "'tanh' or 'relu'",
        )  # fmt: skip
        self.nonlinearity = nonlinearity
        mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(mode, input_size, hidden_size, bias, rng, resolve_dtype(dtype))


class GRUCell(_CellBase):
    """One step of a GRU (gate order r, z, n, as PyTorch's GRUCell).

    Args:
        input_size, hidden_size, bias, device, dtype, rng: as for :class:`RNNCell`.

    Shape:
        input: (N, input_size).    h, output: (N, hidden_size).

    ``forward(x, h=None)`` returns h'; ``backward(grad_h')`` returns dL/dx, or
    ``(dL/dx, dL/dh)`` when h was given.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device=None,
        dtype=np.float32,
        *,
        rng=None,
    ):
        check_device("GRUCell", device)
        super().__init__("GRU", input_size, hidden_size, bias, rng, resolve_dtype(dtype))


class LSTMCell(_CellBase):
    """One step of an LSTM (gate order i, f, g, o, as PyTorch's LSTMCell).

    Args:
        input_size, hidden_size, bias, device, dtype, rng: as for :class:`RNNCell`.

    Shape:
        input: (N, input_size).    h, c, h', c': (N, hidden_size).

    ``forward(x, (h, c)=None)`` returns ``(h', c')``; ``backward((grad_h', grad_c'))`` (either
    may be None) returns dL/dx, or ``(dL/dx, (dL/dh, dL/dc))`` when a state was given.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> cell = nf.LSTMCell(3, 4, rng=0)
        >>> h, c = cell(np.ones((2, 3), dtype=np.float32))
        >>> dx = cell.backward((np.ones_like(h), None))
        >>> dx.shape
        (2, 3)
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device=None,
        dtype=np.float32,
        *,
        rng=None,
    ):
        check_device("LSTMCell", device)
        super().__init__("LSTM", input_size, hidden_size, bias, rng, resolve_dtype(dtype))

    def forward(self, x, hx=None):
        if hx is None:
            h = c = None
        elif isinstance(hx, (tuple, list)) and len(hx) == 2:
            h, c = hx
        else:
            raise TypeError(expected_got(self, "a state (h, c)", type(hx).__name__))
        return self._step(x, h, c)

    def backward(self, grad_output):
        if not (isinstance(grad_output, (tuple, list)) and len(grad_output) == 2):
            raise TypeError(
                expected_got(self, "grad_output (grad_h, grad_c)", type(grad_output).__name__)
            )
        dx, dh, dc, had_state = self._back(*grad_output)
        return (dx, (dh, dc)) if had_state else dx
