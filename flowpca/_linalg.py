"""LU-based linear algebra that stays correct on multi-threaded CPUs.

PyTorch 2.13's batched LU on CPU (``slogdet``, ``solve``, ``inv``, ``lu_factor`` and the
backward of ``slogdet``) returns wrong values, raises, or hangs when more than one
intra-op thread is used on a batch of two or more matrices of size ``n >= ~150``
(pytorch/pytorch#142815, #141358). Single matrices, a batch of one and a single thread are
correct. Every LU-based call in flowpca goes through this module, which keeps the fast
batched call where it is known to be correct (non-CPU devices, small matrices, one thread)
and otherwise loops over 2-D calls. It never changes the process's thread count.

The functions are named and shaped like their ``torch.linalg`` counterparts and support
autograd. They must not be called under ``torch.func.vmap``: vmap turns a 2-D call into a
batched one behind our back.
"""

import torch

# Largest matrix size for which batched CPU LU was measured correct with 2 threads.
# Failures start at n ~ 150; we keep a wide margin.
_SAFE_BATCHED_LU_MAX_N = 64


def batched_lu_is_safe(A):
    """Whether torch's batched LU may be used on ``A`` (shape ``(..., n, n)``)."""
    if A.ndim <= 2 or A.device.type != "cpu":
        return True
    if A.shape[-1] <= _SAFE_BATCHED_LU_MAX_N:
        return True
    n_matrices = A.numel() // max(A.shape[-1] * A.shape[-2], 1)
    return n_matrices <= 1 or torch.get_num_threads() == 1


def _loop(fn, A, *others):
    """Apply a 2-D ``fn`` to each matrix of a batch and stack the results."""
    batch_shape = A.shape[:-2]
    flat_A = A.reshape(-1, *A.shape[-2:])
    flat_others = [B.expand(*batch_shape, *B.shape[-2:]).reshape(-1, *B.shape[-2:])
                   for B in others]
    outputs = [fn(flat_A[i], *(B[i] for B in flat_others)) for i in range(flat_A.shape[0])]
    if isinstance(outputs[0], tuple):
        return tuple(torch.stack(parts).reshape(*batch_shape, *parts[0].shape)
                     for parts in zip(*outputs))
    return torch.stack(outputs).reshape(*batch_shape, *outputs[0].shape)


def slogdet(A):
    """Sign and log of the absolute determinant, like :func:`torch.linalg.slogdet`."""
    if batched_lu_is_safe(A):
        return torch.linalg.slogdet(A)
    sign, logabsdet = _loop(lambda a: tuple(torch.linalg.slogdet(a)), A)
    return sign, logabsdet


def det(A):
    """Determinant, like :func:`torch.linalg.det`."""
    if batched_lu_is_safe(A):
        return torch.linalg.det(A)
    return _loop(torch.linalg.det, A)


def solve(A, B):
    """Solve ``A X = B`` for ``X`` (``B`` of shape ``(..., n, k)``), like
    :func:`torch.linalg.solve` with matrix right-hand sides."""
    if batched_lu_is_safe(A):
        return torch.linalg.solve(A, B)
    return _loop(torch.linalg.solve, A, B)


def inv(A):
    """Matrix inverse, like :func:`torch.linalg.inv`."""
    if batched_lu_is_safe(A):
        return torch.linalg.inv(A)
    return _loop(torch.linalg.inv, A)


def lu_factor(A):
    """LU factorization with pivots, like :func:`torch.linalg.lu_factor`."""
    if batched_lu_is_safe(A):
        return torch.linalg.lu_factor(A)
    return _loop(lambda a: tuple(torch.linalg.lu_factor(a)), A)


def lu_solve(LU, pivots, B):
    """Solve with an LU factorization from :func:`lu_factor`, like
    :func:`torch.linalg.lu_solve`."""
    if batched_lu_is_safe(LU):
        return torch.linalg.lu_solve(LU, pivots, B)
    batch_shape = LU.shape[:-2]
    flat_LU = LU.reshape(-1, *LU.shape[-2:])
    flat_piv = pivots.reshape(-1, pivots.shape[-1])
    flat_B = B.expand(*batch_shape, *B.shape[-2:]).reshape(-1, *B.shape[-2:])
    out = [torch.linalg.lu_solve(flat_LU[i], flat_piv[i], flat_B[i])
           for i in range(flat_LU.shape[0])]
    return torch.stack(out).reshape(*batch_shape, *out[0].shape)
