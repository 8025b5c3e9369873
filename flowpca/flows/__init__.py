"""Normalizing flows behind the Flow contract (see :class:`Flow`)."""

from ._base import Flow
from .linear import LinearFlow

__all__ = ["Flow", "LinearFlow"]
