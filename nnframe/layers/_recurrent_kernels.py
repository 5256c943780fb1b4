"""The recurrent layers' fused step kernels, for a GPU (see nnframe.core.backend.Elementwise).

On a GPU each LSTM or GRU step is one kernel forward and one backward instead of a dozen array
calls; nnframe.layers.recurrent runs them where ``backend.elementwise`` gives one (a GPU, float32
or float64) and its numpy code everywhere else. They do the numpy steps' math, in the same order.

One thread per element ``i`` of the (H, N) state (0 .. hn - 1, hn = H*N). Every array is passed
whole and read by flat index at the step's offsets (an LSTM step's block [c, g, f, i, o,
tanh(c')] at ``cell``, its slice j at cell + j*hn): a step creates no views, and CuPy's cost per
launch stays that of a few arguments. Sigmoid gates arrive as x/2 (their weight rows are halved,
see nnframe.layers.recurrent): sigmoid(x) = tanh(x/2) / 2 + 1/2.
"""

from __future__ import annotations

from nnframe.core.backend import Elementwise


def _with_and_without_dout(name: str, inputs: str, outputs: str, body: str):
    """A backward step's kernel in two forms: without and with the gradient from the step's
    output, ``dout`` (read at offset ``d_o``); ``{dout}`` in ``body`` is where it is added."""
    return (
        Elementwise(name, inputs, outputs, body.format(dout="")),
        Elementwise(
            f"{name}_out",
            f"raw T dout, int64 d_o, {inputs}",
            outputs,
            body.format(dout=" + dout[d_o + i]"),
        ),
    )


# z: the step's pre-activations [g, f, i, o]; cells: every step's block [c, g, f, i, o, tc],
# this step's at ``cell``: c read, the rest written; c' to the next block's c (at ``nxt``),
# h' = o tanh(c') into hout at ``ho``
LSTM_STEP = Elementwise(
    "lstm_step",
    "raw T z, int64 hn, int64 cell, int64 nxt, int64 ho",
    "raw T cells, raw T hout",
    """
    T gg = tanh(z[i]);
    T gf = tanh(z[i + hn]) * (T)0.5 + (T)0.5;
    T gi = tanh(z[i + 2 * hn]) * (T)0.5 + (T)0.5;
    T go = tanh(z[i + 3 * hn]) * (T)0.5 + (T)0.5;
    T cn = gf * cells[cell + i] + gi * gg;
    T tc = tanh(cn);
    cells[cell + hn + i] = gg;
    cells[cell + 2 * hn + i] = gf;
    cells[cell + 3 * hn + i] = gi;
    cells[cell + 4 * hn + i] = go;
    cells[cell + 5 * hn + i] = tc;
    cells[nxt + i] = cn;
    hout[ho + i] = go * tc;
    """,
)

# the same, when the outputs are an array of their own: h' also into the next step's
# right-hand side (rhs at ``ro``)
LSTM_STEP_OWN = LSTM_STEP._replace(
    name="lstm_step_own",
    inputs=LSTM_STEP.inputs + ", int64 ro",
    outputs=LSTM_STEP.outputs + ", raw T rhs",
    body=LSTM_STEP.body + "rhs[ro + i] = hout[ho + i];",
)

# du = dL/dh' (dh at ``dho``, plus dout); dL/dc' = dc + du o (1 - tanh(c')^2); dA at ``dao``:
# dL/d[g, f, i, o] pre-activations dc' i (1 - g^2), dc' c f (1 - f), dc' g i (1 - i),
# du tanh(c') o (1 - o); then dL/dc = dc' f (dc: in and out)
LSTM_STEP_BACK = _with_and_without_dout(
    "lstm_step_back",
    "raw T dh, int64 dho, raw T cells, int64 hn, int64 cell, int64 dao",
    "raw T dA, raw T dc",
    """
    T du = dh[dho + i]{dout};
    T c = cells[cell + i];
    T gg = cells[cell + hn + i];
    T gf = cells[cell + 2 * hn + i];
    T gi = cells[cell + 3 * hn + i];
    T go = cells[cell + 4 * hn + i];
    T tc = cells[cell + 5 * hn + i];
    T dcp = dc[i] + du * (go * ((T)1 - tc * tc));
    dA[dao + i] = dcp * (gi * ((T)1 - gg * gg));
    dA[dao + hn + i] = (dcp * c) * (gf * ((T)1 - gf));
    dA[dao + 2 * hn + i] = (dcp * gg) * (gi * ((T)1 - gi));
    dA[dao + 3 * hn + i] = (du * tc) * (go * ((T)1 - go));
    dc[i] = dcp * gf;
    """,
)

# x: every step's input pre-activations [r, z, n] (this step's at ``xo``); hh: W_hh h (the same
# rows); b: b_hn as (H, N); hbuf: the states, h read at ``hi`` and h' written at ``hw``;
# r, z = sigmoid(x + W h); n = tanh(x_n + r (W_hn h + b_hn)); h' = n + z (h - n); the step's
# [r, z, n] to acts (at ``xo``), W_hn h + b_hn to hhn and h to hs_prev (at ``so``)
GRU_STEP = Elementwise(
    "gru_step",
    "raw T x, raw T hh, raw T b, int64 hn, int64 xo, int64 hi, int64 hw, int64 so",
    "raw T acts, raw T hhn, raw T hbuf, raw T hs_prev",
    """
    T ar = tanh(x[xo + i] + hh[i]) * (T)0.5 + (T)0.5;
    T az = tanh(x[xo + hn + i] + hh[hn + i]) * (T)0.5 + (T)0.5;
    T hb = hh[2 * hn + i] + b[i];
    T an = tanh(ar * hb + x[xo + 2 * hn + i]);
    T hp = hbuf[hi + i];
    acts[xo + i] = ar;
    acts[xo + hn + i] = az;
    acts[xo + 2 * hn + i] = an;
    hhn[so + i] = hb;
    hs_prev[so + i] = hp;
    hbuf[hw + i] = (hp - an) * az + an;
    """,
)

# du = dL/dh' (dh at ``dho`` plus the previous step's gz at ``gp``, plus dout);
# dL/dn_pre = du (1 - z) (1 - n^2); dL/dr_pre = dn_pre (W_hn h + b_hn) r (1 - r);
# dL/dz_pre = du (h - n) z (1 - z); dxp: the three; dhh: the hidden side (its n rows
# r dn_pre); gz = du z (at ``gw``), the part of dL/dh that bypasses the GEMM
GRU_STEP_BACK = _with_and_without_dout(
    "gru_step_back",
    "raw T dh, int64 dho, raw T acts, raw T hhn, raw T hs_prev, int64 hn, int64 xo, int64 so, "
    "int64 gp, int64 gw",
    "raw T dxp, raw T dhh, raw T gzs",
    """
    T du = (dh[dho + i] + gzs[gp + i]){dout};
    T ar = acts[xo + i];
    T az = acts[xo + hn + i];
    T an = acts[xo + 2 * hn + i];
    T dnp = (du * ((T)1 - az)) * ((T)1 - an * an);
    T dr = (dnp * hhn[so + i]) * (ar * ((T)1 - ar));
    T dz = (du * (hs_prev[so + i] - an)) * (az * ((T)1 - az));
    dxp[xo + i] = dr;
    dxp[xo + hn + i] = dz;
    dxp[xo + 2 * hn + i] = dnp;
    dhh[xo + i] = dr;
    dhh[xo + hn + i] = dz;
    dhh[xo + 2 * hn + i] = dnp * ar;
    gzs[gw + i] = du * az;
    """,
)
