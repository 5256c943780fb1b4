"""Matrix helpers for layers' hot paths."""

from __future__ import annotations

import numpy as np
from scipy.linalg import blas

_GEMM = {np.dtype(np.float32): blas.sgemm, np.dtype(np.float64): blas.dgemm}


def _fortran_operand(m: np.ndarray) -> tuple[np.ndarray, int]:
    """(array, trans) such that BLAS reads ``m`` without a copy: m itself if it is
    Fortran-ordered, else its transpose with the transpose flag set."""
    if m.flags.f_contiguous:
        return m, 0
    if m.flags.c_contiguous:
        return m.T, 1
    return np.asfortranarray(m), 0


def matmul_accumulate_(out: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``out += a @ b`` in one BLAS call (beta = 1): no temporary product, no second pass.

    This is how layers accumulate weight gradients (``p.grad += g.T @ x``). ``out`` must be a
    C-contiguous 2-D float32/float64 array; other cases fall back to numpy.

    Shape:
        out: (M, K)    a: (M, N)    b: (N, K)
    """
    gemm = _GEMM.get(out.dtype)
    if gemm is None or not out.flags.c_contiguous or a.dtype != out.dtype or b.dtype != out.dtype:
        out += a @ b
        return out
    # BLAS is column-major: out (C order) is out.T in Fortran order, and out.T += b.T @ a.T
    fa, trans_a = _fortran_operand(b.T)
    fb, trans_b = _fortran_operand(a.T)
    gemm(1.0, fa, fb, beta=1.0, c=out.T, trans_a=trans_a, trans_b=trans_b, overwrite_c=1)
    return out
