"""Warnings raised by flowpca."""

from sklearn.exceptions import InconsistentVersionWarning as _SklearnInconsistentVersionWarning


class DegenerateFitWarning(UserWarning):
    """The data do not support the fitted model: the likelihood is unbounded (e.g. data
    on a lower-dimensional subspace or manifold with ``alpha=0``)."""


class TrainingDivergedWarning(UserWarning):
    """Training hit a non-finite loss or parameters; the last good weights were restored."""


class AmbiguousInverseWarning(UserWarning):
    """``inverse_transform`` found, for some points, a second point of data space with
    the same components (the component map is not one to one there); it returned the
    preimage chosen by its documented rule."""


class InconsistentVersionWarning(_SklearnInconsistentVersionWarning):
    """A model saved with one flowpca version is loaded with another.

    A subclass of scikit-learn's warning of the same name, so that a filter on either
    applies to both.

    Parameters
    ----------
    estimator_name : str
        Estimator name.
    original_flowpca_version : str
        flowpca version the model was saved with.
    current_flowpca_version : str
        flowpca version loading it.
    """

    def __init__(self, *, estimator_name, original_flowpca_version, current_flowpca_version):
        self.estimator_name = estimator_name
        self.original_flowpca_version = original_flowpca_version
        self.current_flowpca_version = current_flowpca_version
        # scikit-learn's attributes: this warning is about flowpca's versions.
        self.original_sklearn_version = self.current_sklearn_version = None

    def __str__(self):
        return (f"Loading estimator {self.estimator_name} saved with flowpca "
                f"{self.original_flowpca_version} using flowpca "
                f"{self.current_flowpca_version}. This might lead to breaking code or "
                "invalid results. Use at your own risk.")


__all__ = ["AmbiguousInverseWarning", "DegenerateFitWarning", "InconsistentVersionWarning",
           "TrainingDivergedWarning"]
