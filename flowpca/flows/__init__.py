"""Normalizing flows behind the Flow contract (see :class:`Flow`)."""

from ._base import Flow, FlowSettings
from ._bilipschitz import BiLipschitzMLPFlow
from .injective import InjectiveFlow
from .coupling import RealNVPFlow
from .implicit import ImplicitFlow
from .linear import LinearFlow
from .mlp import MLPFlow
from .residual import ResidualFlow
from .zuko import MAFFlow, NSFFlow, ZukoFlow

__all__ = ["Flow", "FlowSettings", "LinearFlow", "MLPFlow", "BiLipschitzMLPFlow",
           "InjectiveFlow", "RealNVPFlow", "NSFFlow", "MAFFlow", "ZukoFlow", "ResidualFlow",
           "ImplicitFlow"]
