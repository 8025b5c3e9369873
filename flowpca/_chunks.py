"""Row chunks sized by scikit-learn's ``working_memory``, and per-chunk evaluation of a
flow on (lazily) centered data."""

import numpy as np
import torch
from sklearn import get_config
from sklearn.utils import gen_batches

from . import _device

# Working memory per row and feature of a forward pass with the log-determinant (and of
# the inverse), for chunking by scikit-learn's working_memory: measured 12 float64
# temporaries of shape (rows, features) for the MLP flow, whatever its depth; 16 for margin.
FORWARD_BYTES_PER_FEATURE = 16 * 8


def iter_row_chunks(n_rows, bytes_per_row):
    """Slices of ``range(n_rows)`` sized by scikit-learn's ``working_memory`` (MiB)."""
    budget = get_config()["working_memory"] * 2**20
    chunk = int(min(max(budget // max(int(bytes_per_row), 1), 1), max(n_rows, 1)))
    return gen_batches(n_rows, chunk)


def jacobian_bytes_per_row(n_features, dtype):
    """Working memory of one row of the per-point decomposition (J, U, V and temporaries)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 4 * n_features * n_features * itemsize


def flow_device_dtype(flow):
    """The device and dtype of ``flow``'s parameters."""
    parameter = next(flow.parameters())
    return parameter.device, parameter.dtype


def iter_tensor_chunks(Xc, flow, bytes_per_row=None):
    """Row chunks of ``Xc`` as tensors on ``flow``'s device and in its dtype; by default
    sized for a per-point Jacobian decomposition."""
    device, dtype = flow_device_dtype(flow)
    if bytes_per_row is None:
        bytes_per_row = jacobian_bytes_per_row(Xc.shape[1], dtype)
    for rows in iter_row_chunks(Xc.shape[0], bytes_per_row):
        yield _device.to_tensor(Xc[rows], device, dtype)


def map_chunks(Xc, flow, compute, trailing_shape, bytes_per_row=None):
    """``compute`` applied to each row chunk of ``Xc`` (a centered tensor on ``flow``'s
    device), gathered in an array of shape ``(n_samples,) + trailing_shape``."""
    out = np.empty((Xc.shape[0],) + tuple(trailing_shape))
    start = 0
    for x in iter_tensor_chunks(Xc, flow, bytes_per_row):
        out[start:start + x.shape[0]] = _device.to_numpy(compute(x))
        start += x.shape[0]
    return out


class LazilyCentered:
    """``X - mean`` row block by row block, so that inference never holds a centered
    copy of the whole input."""

    def __init__(self, X, mean):
        self.X, self.mean = X, mean
        self.shape = X.shape

    def __getitem__(self, rows):
        return self.X[rows].astype(np.float64, copy=False) - self.mean
