"""Normalizing flows behind the Flow contract (see :class:`Flow`)."""

from ._base import Flow
from ._bilipschitz import BiLipschitzMLPFlow
from .linear import LinearFlow
from .mlp import MLPFlow

__all__ = ["Flow", "LinearFlow", "MLPFlow", "BiLipschitzMLPFlow"]
