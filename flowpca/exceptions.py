"""Warnings raised by flowpca."""

from ._training import TrainingDivergedWarning


class DegenerateFitWarning(UserWarning):
    """The data do not support the fitted model: the likelihood is unbounded (e.g. data
    on a lower-dimensional subspace or manifold with ``alpha=0``)."""


__all__ = ["DegenerateFitWarning", "TrainingDivergedWarning"]
