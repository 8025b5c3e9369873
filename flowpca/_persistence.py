"""What a fitted estimator's state holds in place of torch objects, for pickle and skops.

The state of a :class:`~flowpca.NormalizingFlowPCA` holds no torch object: a flow is
stored as ``{"class": "flowpca.flows.mlp.MLPFlow", "config": {...}, "state": {name:
ndarray}}`` (weights on CPU), and a ``torch.device`` parameter as its string. So
``skops.io`` lists only flowpca's estimator class as a type to trust, and loading calls
nothing but the constructors of flowpca's own flow classes: a class name is looked up in
a registry of those classes, never imported from an arbitrary string.

Flows of other packages (a user's subclass of :class:`~flowpca.flows.Flow`) are stored by
class object instead: plain pickle handles them; skops asks the user to trust them.
"""

import importlib
import warnings

import numpy as np
import torch

from .flows import Flow

_FLOW_KEYS = frozenset({"class", "config", "state"})
_CONFIG_TYPES = (bool, int, float, str, type(None))
_DEVICE_KEY = "torch.device"


def _qualified_name(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_config_value(value):
    if isinstance(value, (tuple, list)):
        return all(isinstance(item, _CONFIG_TYPES) for item in value)
    return isinstance(value, _CONFIG_TYPES)


def flow_classes():
    """flowpca's own flow classes by qualified name (all subclasses of :class:`Flow`
    defined in flowpca; the families are imported with :mod:`flowpca.flows`)."""
    from .flows._families import family_modules

    for module in family_modules():
        try:
            importlib.import_module(module)
        except ImportError:  # a family whose optional dependency is missing
            pass
    registry, pending = {}, [Flow]
    while pending:
        cls = pending.pop()
        for subclass in cls.__subclasses__():
            pending.append(subclass)
            name = _qualified_name(subclass)
            if name.startswith("flowpca.") and not getattr(subclass, "__abstractmethods__", ()):
                registry[name] = subclass
    return registry


def is_stored_flow(value):
    return isinstance(value, dict) and set(value) == _FLOW_KEYS


def flow_to_state(flow):
    """A flow as ``{"class", "config", "state"}``: no torch object, weights on CPU."""
    cls = type(flow)
    name = _qualified_name(cls)
    config = dict(flow.get_config())
    # By name only what loads from plain values; a config holding objects (a wrapped
    # user's zuko module) goes with the class object, for pickle or a trusting skops.
    by_name = flow_classes().get(name) is cls and all(map(_is_config_value, config.values()))
    return {
        "class": name if by_name else cls,
        "config": config,
        "state": {key: value.detach().cpu().numpy()
                  for key, value in flow.state_dict().items()},
    }


def flow_from_state(stored):
    """Rebuild a flow stored by :func:`flow_to_state`, on CPU, as a freshly constructed
    module (trainable): fitted flows are frozen by the caller."""
    cls = stored["class"]
    if isinstance(cls, str):
        registry = flow_classes()
        if cls not in registry:
            raise ValueError(f"Unknown flow class {cls!r} in the stored model; known "
                             f"flows: {sorted(registry)}.")
        cls = registry[cls]
    elif not (isinstance(cls, type) and issubclass(cls, Flow)):
        raise TypeError(f"The stored flow class {cls!r} is not a flowpca Flow.")
    config = stored["config"]
    # Plain values only for classes looked up by name (a class object was trusted).
    if not isinstance(config, dict) or isinstance(stored["class"], str) and not all(
            isinstance(key, str) and _is_config_value(value) for key, value in config.items()):
        raise ValueError(f"Invalid stored flow configuration: {config!r}.")
    arrays = stored["state"]
    if not (isinstance(arrays, dict) and all(isinstance(value, np.ndarray)
                                             for value in arrays.values())):
        raise ValueError("Invalid stored flow weights: expected a dict of arrays.")
    # Configurations stored before a constructor argument was renamed.
    config = {cls.renamed_parameters.get(key, key): value for key, value in config.items()}
    flow = cls(**config)
    tensors = {key: torch.from_numpy(np.array(value)) for key, value in arrays.items()}
    if tensors:
        flow = flow.to(next(iter(tensors.values())).dtype)
    flow.load_state_dict(tensors)
    return flow


def device_to_state(device):
    return {_DEVICE_KEY: str(device)} if isinstance(device, torch.device) else device


def device_from_state(device):
    if isinstance(device, dict) and set(device) == {_DEVICE_KEY}:
        return torch.device(device[_DEVICE_KEY])
    return device


def warn_if_other_version(estimator_name, saved_version, current_version):
    from .exceptions import InconsistentVersionWarning

    if saved_version is not None and saved_version != current_version:
        warnings.warn(InconsistentVersionWarning(
            estimator_name=estimator_name, original_flowpca_version=saved_version,
            current_flowpca_version=current_version), stacklevel=4)


def estimator_to_state(state, version):
    """An estimator's ``__dict__`` as stored: flows as :func:`flow_to_state`, a
    ``torch.device`` as its string, the component map as plain values, and the flowpca
    ``version``."""
    for name, value in state.items():
        if isinstance(value, Flow):
            state[name] = flow_to_state(value)
        elif isinstance(value, torch.device):
            state[name] = device_to_state(value)
    if "_component_map" in state:
        state["_component_map"] = state["_component_map"].get_state()
    state["_flowpca_version"] = version
    return state


def estimator_from_state(state, estimator_name, version):
    """The estimator's ``__dict__`` from a state of :func:`estimator_to_state`, or of an
    earlier layout: before the component maps (the reference field in private
    attributes), or before the 'auto' parameters (every value explicit)."""
    from .components import component_map_from_legacy_state, component_map_from_state
    from .flows._families import AUTO_PARAMETERS

    state = dict(state)
    warn_if_other_version(estimator_name, state.pop("_flowpca_version", None), version)
    for name, value in state.items():
        if is_stored_flow(value):
            flow = flow_from_state(value)
            # A fitted flow is frozen; a flow given as the parameter stays trainable.
            state[name] = flow.requires_grad_(False).eval() if name.endswith("_") else flow
        else:
            state[name] = device_from_state(value)
    if "flow_" in state:
        if isinstance(state.get("_component_map"), dict):
            state["_component_map"] = component_map_from_state(state["_component_map"])
        else:
            state["_component_map"] = component_map_from_legacy_state(state, state["flow_"])
        if "alpha_" not in state:
            for name in AUTO_PARAMETERS:
                state.setdefault(f"{name}_", state.get(name))
            state.setdefault("alpha_scores_", None)
    return state
