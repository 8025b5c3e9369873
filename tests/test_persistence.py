"""Saving and loading fitted estimators: skops (secure, no arbitrary code), pickle, and the
flowpca version recorded in the state."""

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.exceptions import InconsistentVersionWarning as SklearnInconsistentVersionWarning

import flowpca._estimator
from flowpca import NormalizingFlowPCA
from flowpca.exceptions import InconsistentVersionWarning
from flowpca import _persistence
from flowpca.flows import (ImplicitFlow, LinearFlow, MAFFlow, MLPFlow, NSFFlow, RealNVPFlow,
                           ResidualFlow)

from .conftest import PAPER_TRAINING, anisotropic_gaussian

ESTIMATOR_TYPE = "flowpca._estimator.NormalizingFlowPCA"


class ScaledLinearFlow(LinearFlow):
    """A flow family from outside flowpca (it stays out of the registry)."""


def _fit(**params):
    X = anisotropic_gaussian(200, 4, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return NormalizingFlowPCA(random_state=0, **params).fit(X), X


@pytest.fixture(scope="module", params=["mlp", "linear", "mlp-float32"])
def fitted(request):
    params = {"mlp": dict(flow="mlp", n_layers=2, max_iter=3, n_components=3),
              "linear": dict(flow="linear"),
              "mlp-float32": dict(flow="mlp", n_layers=2, max_iter=3,
                                  dtype="float32")}[request.param]
    return _fit(**params)


def _assert_same_model(loaded, model, X):
    assert type(loaded) is NormalizingFlowPCA
    assert loaded.get_params().keys() == model.get_params().keys()
    assert np.array_equal(loaded.score_samples(X), model.score_samples(X))
    assert np.array_equal(loaded.transform(X), model.transform(X))
    assert np.array_equal(loaded.sample(20, random_state=1), model.sample(20, random_state=1))
    assert type(loaded.flow_) is type(model.flow_)
    assert next(loaded.flow_.parameters()).dtype == next(model.flow_.parameters()).dtype
    assert not loaded.flow_.training
    assert not any(p.requires_grad for p in loaded.flow_.parameters())


def _torch_objects(value, path="state"):
    """Paths of torch objects anywhere in a (nested) state."""
    if type(value).__module__.split(".")[0] == "torch":
        return [path]
    if isinstance(value, dict):
        return [p for key, item in value.items()
                for p in _torch_objects(item, f"{path}[{key!r}]")]
    if isinstance(value, (list, tuple)):
        return [p for i, item in enumerate(value) for p in _torch_objects(item, f"{path}[{i}]")]
    return []


# ---------------------------------------------------------------- skops
def test_skops_round_trip_trusts_only_flowpca(fitted, tmp_path):
    model, X = fitted
    path = tmp_path / "model.skops"
    sio.dump(model, path)
    untrusted = sio.get_untrusted_types(file=path)
    assert untrusted == [ESTIMATOR_TYPE]
    with pytest.raises(sio.exceptions.UntrustedTypesFoundException):
        sio.load(path)  # nothing is trusted by default
    loaded = sio.load(path, trusted=untrusted)
    _assert_same_model(loaded, model, X)


def test_skops_round_trip_with_torch_parameters(tmp_path):
    # A Flow instance as `flow` and a torch.device as `device`: stored without torch
    # objects too, and restored as such (the flow parameter trainable, as given).
    X = anisotropic_gaussian(200, 4, seed=0)
    initial = MLPFlow(4, n_layers=1)
    model, _ = _fit(flow=initial, max_iter=2, device=torch.device("cpu"))
    assert _torch_objects(model.__getstate__()) == []
    data = sio.dumps(model)
    assert sio.get_untrusted_types(data=data) == [ESTIMATOR_TYPE]
    loaded = sio.loads(data, trusted=[ESTIMATOR_TYPE])
    _assert_same_model(loaded, model, X)
    assert loaded.device == torch.device("cpu")
    assert isinstance(loaded.flow, MLPFlow) and loaded.flow is not initial
    for a, b in zip(loaded.flow.parameters(), initial.parameters()):
        assert torch.equal(a, b) and a.requires_grad
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        refit = loaded.fit(X)  # the loaded parameters are usable for a new fit
    assert np.array_equal(refit.score_samples(X), model.score_samples(X))


def test_state_has_no_torch_objects(fitted):
    model, _ = fitted
    state = model.__getstate__()
    assert _torch_objects(state) == []
    assert state["flow_"]["class"] in {"flowpca.flows.mlp.MLPFlow",
                                       "flowpca.flows.linear.LinearFlow"}
    assert state["_flowpca_version"] == flowpca.__version__


def test_unknown_flow_class_is_refused(fitted):
    # A tampered file cannot make loading call anything but flowpca's flow constructors.
    model, _ = fitted
    for bad_class in ("builtins.eval", "os.system", "flowpca.flows._base.Flow"):
        state = model.__getstate__()
        state["flow_"] = dict(state["flow_"], **{"class": bad_class})
        with pytest.raises(ValueError, match="Unknown flow class"):
            NormalizingFlowPCA.__new__(NormalizingFlowPCA).__setstate__(state)
    state = model.__getstate__()
    state["flow_"] = dict(state["flow_"], **{"class": eval})
    with pytest.raises(TypeError, match="not a flowpca Flow"):
        NormalizingFlowPCA.__new__(NormalizingFlowPCA).__setstate__(state)
    state = model.__getstate__()
    state["flow_"] = dict(state["flow_"], config={"n_features": [[4]]})
    with pytest.raises(ValueError, match="configuration"):
        NormalizingFlowPCA.__new__(NormalizingFlowPCA).__setstate__(state)


# ---------------------------------------------------------------- pickle
def test_pickle_round_trip(fitted):
    model, X = fitted
    loaded = pickle.loads(pickle.dumps(model))
    _assert_same_model(loaded, model, X)
    # The model itself is untouched by pickling.
    assert isinstance(model.flow_, (MLPFlow, LinearFlow))


def test_pickle_unfitted_and_foreign_flow():
    unfitted = pickle.loads(pickle.dumps(NormalizingFlowPCA(alpha=0.1, flow="mlp")))
    assert unfitted.alpha == 0.1 and not hasattr(unfitted, "flow_")
    # A flow class from outside flowpca is stored as the class itself: pickle handles it.
    X = anisotropic_gaussian(200, 3, seed=0)
    model = NormalizingFlowPCA(flow=ScaledLinearFlow(3), solver="adam", max_iter=2,
                               random_state=0, early_stopping=False,
        **PAPER_TRAINING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X)
    loaded = pickle.loads(pickle.dumps(model))
    assert type(loaded.flow_) is ScaledLinearFlow
    assert np.array_equal(loaded.score_samples(X), model.score_samples(X))


# ---------------------------------------------------------------- versions
def test_loading_under_another_version_warns(fitted, monkeypatch):
    model, X = fitted
    data = pickle.dumps(model)
    skops_data = sio.dumps(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same version: no warning at all
        pickle.loads(data)
        sio.loads(skops_data, trusted=[ESTIMATOR_TYPE])
    monkeypatch.setattr(flowpca._estimator, "__version__", "99.0")
    for load in (lambda: pickle.loads(data),
                 lambda: sio.loads(skops_data, trusted=[ESTIMATOR_TYPE])):
        with pytest.warns(InconsistentVersionWarning, match="saved with flowpca") as record:
            loaded = load()
        warning = next(w.message for w in record
                       if isinstance(w.message, InconsistentVersionWarning))
        assert warning.original_flowpca_version == flowpca.__version__
        assert warning.current_flowpca_version == "99.0"
        assert isinstance(warning, SklearnInconsistentVersionWarning)
        assert np.array_equal(loaded.score_samples(X), model.score_samples(X))


# ---------------------------------------------------------------- older layouts
@pytest.mark.parametrize("name", ["linear", "mlp", "nsf", "injective"])
def test_models_saved_before_component_maps_load_unchanged(name):
    # States written by flowpca at commit 7372b8e, before the component maps: the
    # reference field lay in private attributes of the estimator. Each record holds the
    # state (from __getstate__, as pickle and skops store it), new points, and what the
    # model returned for them then (sine wave, 60 training points, 1-layer flows).
    path = Path(__file__).parent / "data" / "states_before_component_maps.pkl"
    with path.open("rb") as file:
        record = pickle.load(file)[name]
    model = NormalizingFlowPCA.__new__(NormalizingFlowPCA)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InconsistentVersionWarning)
        model.__setstate__(record["state"])
    assert not any(key.startswith("_reference") for key in vars(model))
    np.testing.assert_array_equal(model.transform(record["X"]), record["transform"])
    np.testing.assert_array_equal(model.score_samples(record["X"]), record["score_samples"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the nsf's inverse warns of other preimages
        np.testing.assert_array_equal(model.inverse_transform(record["transform"]),
                                      record["inverse_transform"])
    restored = pickle.loads(pickle.dumps(model))  # and stored again in the new layout
    np.testing.assert_array_equal(restored.transform(record["X"]), record["transform"])


@pytest.mark.parametrize("cls, old, new, value", [
    (RealNVPFlow, "n_couplings", "n_layers", 2), (ResidualFlow, "n_blocks", "n_layers", 2),
    (ResidualFlow, "hidden_sizes", "hidden_features", (8,)),
    (ImplicitFlow, "n_blocks", "n_layers", 2), (NSFFlow, "transforms", "n_layers", 2),
    (MAFFlow, "transforms", "n_layers", 2),
])
def test_renamed_flow_arguments_warn_and_stored_configs_load(cls, old, new, value):
    # One name per concept across families (depth n_layers, widths hidden_features); the
    # names before flowpca 0.2 still work for one release, with a FutureWarning, and
    # configurations stored under them load silently.
    with pytest.warns(FutureWarning, match=f"'{old}' is deprecated"):
        flow = cls(3, **{old: value})
    assert getattr(flow, new) == value and old not in flow.get_config()
    with pytest.warns(FutureWarning, match=f"'{old}' is deprecated"):
        assert getattr(flow, old) == value
    stored = _persistence.flow_to_state(flow)
    stored["config"] = {old if key == new else key: item
                        for key, item in stored["config"].items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = _persistence.flow_from_state(stored)
    assert getattr(loaded, new) == value
    for key, tensor in flow.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor)
