"""The flow families the estimator builds by name (``flow='mlp'``, ``'realnvp'``, ...).

Each family is a builder ``build(X, settings) -> Flow``: ``X`` is the centered training
data as a tensor (its device and dtype are the flow's) and ``settings`` a
:class:`FlowSettings`. A family reads the settings it uses and validates its own
``flow_params`` with :meth:`FlowSettings.params`. Builders are imported lazily, so an
optional dependency (zuko) is needed only by the families that use it.
"""

import importlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch

# name -> "module:builder" (module relative to flowpca.flows)
_FAMILIES = {
    "linear": "linear:build_linear",
    "mlp": "mlp:build_mlp",
    "realnvp": "coupling:build_realnvp",
    "residual": "residual:build_residual",
    "implicit": "implicit:build_implicit",
    "nsf": "zuko:build_nsf",
    "injective": "injective:build_injective",
    "maf": "zuko:build_maf",
}


def family_names():
    """The names ``flow=`` accepts, in a stable order."""
    return tuple(_FAMILIES)


def family_modules():
    """Module names of the registered families (for loading stored flows)."""
    return tuple(f"flowpca.flows.{spec.split(':')[0]}" for spec in _FAMILIES.values())


@dataclass(frozen=True)
class FlowSettings:
    """What the estimator tells a flow family when it builds a flow.

    Attributes
    ----------
    alpha : float
        Penalty weight (variance floor), for initializations that whiten the data.
    n_layers : int
        The family's depth: hidden blocks, coupling layers, residual blocks, transforms.
    activation : str
        Nonlinearity of the 'mlp' flow; other families ignore it.
    flow_params : dict
        Family-specific keyword arguments (``NormalizingFlowPCA(flow_params=...)``).
    generator : torch.Generator
        The only source of randomness of the initialization.
    n_components : int or None
        Latent dimension of the families that have one ('injective'); None for all
        features.
    """

    alpha: float
    n_layers: int
    activation: str = "asinh"
    flow_params: dict = field(default_factory=dict)
    generator: Any = None
    n_components: Any = None

    def params(self, family, defaults):
        """``flow_params`` merged into ``defaults``; unknown keys raise ``ValueError``.

        Parameters
        ----------
        family : str
            The family's name, for the error message.
        defaults : dict
            Every accepted key with its default value.

        Returns
        -------
        params : dict
            The defaults updated with the user's values.
        """
        unknown = sorted(set(self.flow_params) - set(defaults))
        if unknown:
            raise ValueError(
                f"flow_params has keys {unknown} that flow={family!r} does not accept; "
                f"accepted keys are {sorted(defaults)}.")
        return {**defaults, **self.flow_params}


def build_flow(name, X, settings):
    """Build the flow family ``name`` for the centered training data ``X``.

    Parameters
    ----------
    name : str
        One of :func:`family_names`.
    X : torch.Tensor of shape (n_samples, n_features)
        Centered training data on the flow's device, in its dtype.
    settings : FlowSettings

    Returns
    -------
    flow : Flow
    """
    module_name, builder_name = _FAMILIES[name].split(":")
    module = importlib.import_module(f".{module_name}", __package__)
    return getattr(module, builder_name)(X, settings)


def data_scale(X, alpha):
    """``1 / sqrt(mean feature variance + alpha)``: a scale that makes ``X`` about unit."""
    variance = float(X.var(dim=0, unbiased=False).mean()) if X.shape[0] > 1 else 0.0
    return 1.0 / math.sqrt(max(variance, torch.finfo(torch.float64).tiny) + alpha)
