"""flowpca: nonlinear principal components with a density model, from normalizing flows."""

from ._estimator import NormalizingFlowPCA
from ._version import __version__

__all__ = ["NormalizingFlowPCA", "__version__"]
