"""The components of a fitted flow: its local geometry, from per-point Jacobians.

- :mod:`._local_svd`: the per-point SVD of the Jacobian and its top-k variant.
- :mod:`._orientation`: which local component is which, and its sign, along the data.
- :mod:`._integration`: coordinates whose gradient is the tracked local frame.
- :mod:`._inverse`: solving ``components(x) = y`` for ``x``.
- :mod:`._dimension`: the manifold's dimension from the spectrum of local variances.
- :mod:`._maps`: the component map an estimator chooses once at fit and delegates to.
"""

from ._dimension import intrinsic_dimension, spectral_gap_dimension
from ._local_svd import linear_decomposition, local_svd, top_local_components
from ._maps import (ComponentMap, LatentComponents, LinearComponents, LocalComponents,
                    component_map_from_legacy_state, component_map_from_state,
                    make_component_map)

__all__ = [
    "ComponentMap", "LatentComponents", "LinearComponents", "LocalComponents",
    "component_map_from_legacy_state", "component_map_from_state", "intrinsic_dimension",
    "linear_decomposition", "local_svd", "make_component_map", "spectral_gap_dimension",
    "top_local_components",
]
