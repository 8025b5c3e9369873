"""LU-based linear algebra that stays correct on multi-threaded CPUs.

PyTorch 2.13's batched LU on CPU (``slogdet``, ``det``, ``solve``, ``inv``, ``lu_factor``
and the backward of ``slogdet``) returns wrong values, raises ("Pivots given to lu_solve
must all be greater or equal to 1") or hangs when more than one intra-op thread is used on
a batch of two or more matrices of size ``n >= ~150`` (pytorch/pytorch#142815, #141358;
docs/contributing.rst, "Known hazards"). Single matrices, a batch of one and a single
thread are correct.
Every LU-based call in flowpca goes through this module, which keeps the fast batched call
where it is known to be correct (non-CPU devices, small matrices, one thread, one matrix)
and otherwise loops over 2-D calls. It never changes the process's thread count.

The functions are named, shaped and typed like their ``torch.linalg`` counterparts
(including broadcasting and the named-tuple results) and support autograd: the loop path
differentiates through the 2-D calls, so the backward is also made of 2-D calls. They must
not be called under ``torch.func.vmap``: vmap turns a 2-D call into a batched one behind
our back.
"""

import torch

# Largest matrix size for which torch's batched CPU LU is used with several threads.
# Measured with torch 2.13.0+cpu (bundled oneMKL) on a 2-core x86-64 machine, float32 and
# float64, batches of 2 to 256: every op (slogdet, solve, inv, lu_factor, slogdet
# backward) was exact up to n = 149 with 2, 4, 16 and 32 threads; from n = 150 (4 threads
# or more) or n = 151 (2 threads) they hang, raise, or return log-determinants off by
# ~10%. The crossover presumably is oneMKL's switch to a threaded getrf, which may sit
# elsewhere on other CPUs, and looping instead costs well under a millisecond per call
# at this size (one slogdet per layer per step in the MLP flow), so we keep a margin of
# more than 2x below the measured failure rather than chase the last few percent.
_SAFE_BATCHED_LU_MAX_N = 64


def batched_lu_is_safe(A):
    """Whether torch's batched LU may factor ``A`` (shape ``(..., n, n)``) in one call.

    Only the matrices that get factored count: ``torch.linalg.solve`` factors ``A`` as
    given and broadcasts the right-hand side in the triangular solves, which are correct.
    """
    if A.device.type != "cpu" or A.shape[-1] <= _SAFE_BATCHED_LU_MAX_N:
        return True
    n_matrices = 1
    for size in A.shape[:-2]:
        n_matrices *= size
    return n_matrices <= 1 or torch.get_num_threads() == 1


def _flatten(T, batch_shape):
    """``T`` broadcast to ``batch_shape`` and flattened to one batch dimension."""
    return T.expand(*batch_shape, *T.shape[-2:]).reshape(-1, *T.shape[-2:])


def _stack(outputs, batch_shape):
    return torch.stack(outputs).reshape(*batch_shape, *outputs[0].shape)


def _loop(fn, A, *others, batch_shape=None):
    """Apply a 2-D ``fn`` to each matrix of a batch (others broadcast) and stack."""
    if batch_shape is None:
        batch_shape = A.shape[:-2]
    flat = [_flatten(T, batch_shape) for T in (A, *others)]
    outputs = [fn(*(T[i] for T in flat)) for i in range(flat[0].shape[0])]
    if isinstance(outputs[0], tuple):
        return tuple(_stack(list(parts), batch_shape) for parts in zip(*outputs))
    return _stack(outputs, batch_shape)


def slogdet(A):
    """Sign and log of the absolute determinant, like :func:`torch.linalg.slogdet`."""
    if batched_lu_is_safe(A):
        return torch.linalg.slogdet(A)
    return torch.return_types.linalg_slogdet(
        _loop(lambda a: tuple(torch.linalg.slogdet(a)), A))


def det(A):
    """Determinant, like :func:`torch.linalg.det`."""
    if batched_lu_is_safe(A):
        return torch.linalg.det(A)
    return _loop(torch.linalg.det, A)


def _is_vector_rhs(A, B):
    # torch.linalg.solve's rule for a (batch of) vector right-hand side(s).
    return B.ndim == 1 or (B.ndim == A.ndim - 1 and B.shape == A.shape[:-1])


def solve(A, B):
    """Solve ``A X = B`` for ``X``, like :func:`torch.linalg.solve` (``left=True``).

    ``B`` of shape ``(..., n, k)`` or, as in torch, ``(..., n)`` for vectors; batch
    dimensions broadcast.
    """
    if batched_lu_is_safe(A):
        return torch.linalg.solve(A, B)
    vector = _is_vector_rhs(A, B)
    B_matrix = B.unsqueeze(-1) if vector else B
    batch_shape = torch.broadcast_shapes(A.shape[:-2], B_matrix.shape[:-2])
    X = _loop(torch.linalg.solve, A, B_matrix, batch_shape=batch_shape)
    return X.squeeze(-1) if vector else X


def inv(A):
    """Matrix inverse, like :func:`torch.linalg.inv`."""
    if batched_lu_is_safe(A):
        return torch.linalg.inv(A)
    return _loop(torch.linalg.inv, A)


def lu_factor(A):
    """LU factorization with pivots, like :func:`torch.linalg.lu_factor`."""
    if batched_lu_is_safe(A):
        return torch.linalg.lu_factor(A)
    return torch.return_types.linalg_lu_factor(
        _loop(lambda a: tuple(torch.linalg.lu_factor(a)), A))


def lu_solve(LU, pivots, B, adjoint=False):
    """Solve ``A X = B`` (``A^H X = B`` with ``adjoint``) with ``LU, pivots =
    lu_factor(A)``, like :func:`torch.linalg.lu_solve` (``B`` of shape ``(..., n, k)``,
    batches broadcast)."""
    if batched_lu_is_safe(LU):
        return torch.linalg.lu_solve(LU, pivots, B, adjoint=adjoint)
    batch_shape = torch.broadcast_shapes(LU.shape[:-2], B.shape[:-2])
    pivots = pivots.expand(*batch_shape, pivots.shape[-1]).reshape(-1, pivots.shape[-1])
    flat_LU, flat_B = _flatten(LU, batch_shape), _flatten(B, batch_shape)
    return _stack([torch.linalg.lu_solve(flat_LU[i], pivots[i], flat_B[i], adjoint=adjoint)
                   for i in range(flat_LU.shape[0])], batch_shape)
