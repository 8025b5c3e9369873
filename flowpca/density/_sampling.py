"""Scoring and sampling a fitted flow's density."""

import warnings

import numpy as np
import torch

from .. import _device
from .._chunks import FORWARD_BYTES_PER_FEATURE, flow_device_dtype, iter_row_chunks, \
    map_chunks
from ._objective import log_likelihood

# Redraw rounds for samples whose inverse overflows.
_MAX_REDRAWS = 100


def score_samples(flow, Xc):
    """Log-likelihood of each centered row: the full ``D``-dimensional density, or for an
    injective flow the density on its manifold of the projection."""
    if flow.is_injective:
        with torch.no_grad():
            return map_chunks(Xc, flow, flow.manifold_log_likelihood, ())
    return map_chunks(Xc, flow, lambda x: log_likelihood(flow, x), (),
                      bytes_per_row=FORWARD_BYTES_PER_FEATURE * Xc.shape[1])


def sample(flow, n_samples, generator):
    """``f^-1(z)`` for ``n_samples`` draws ``z ~ N(0, I)`` (centered samples). Draws
    whose inverse overflows are redrawn, with a warning that counts them."""
    device, dtype = flow_device_dtype(flow)
    n_features = flow.n_features
    out = np.empty((n_samples, n_features))
    n_redrawn = 0
    with torch.no_grad():
        for rows in iter_row_chunks(n_samples, FORWARD_BYTES_PER_FEATURE * n_features):
            z = torch.randn(rows.stop - rows.start, n_features, generator=generator,
                            device=device, dtype=dtype)
            x = flow.inverse(z)
            # Heavy-tailed flows (asinh layers invert to nested sinh) can overflow far
            # in the tails: redraw those rows, i.e. sample the representable part.
            for _ in range(_MAX_REDRAWS):
                bad = ~torch.isfinite(x).all(dim=1)
                if not bad.any():
                    break
                n_redrawn += int(bad.sum())
                z = torch.randn(int(bad.sum()), n_features, generator=generator,
                                device=device, dtype=dtype)
                x[bad] = flow.inverse(z)
            else:
                raise FloatingPointError("The fitted flow's inverse overflows for most "
                                         "draws; the model cannot be sampled.")
            out[rows] = _device.to_numpy(x)
    if n_redrawn:
        warnings.warn(f"{n_redrawn} of {n_samples} draws overflowed in the flow's "
                      "inverse (heavy tails) and were redrawn.", UserWarning, stacklevel=3)
    return out
