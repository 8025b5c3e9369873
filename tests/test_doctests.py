"""The Examples sections of flowpca's docstrings run, and the public API has them.

Every module of the package is searched for doctests (private ones too: their examples
must stay true), so new modules are covered as they land. Plots use matplotlib's
headless Agg backend.
"""

import doctest
import importlib
import inspect
import pkgutil
import warnings

import pytest

import flowpca
from flowpca import flows
from flowpca.flows import _families, coupling, implicit, injective, residual, zuko

OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _module_names():
    names = [flowpca.__name__]
    for info in pkgutil.walk_packages(flowpca.__path__, prefix=f"{flowpca.__name__}."):
        names.append(info.name)
    return sorted(names)


def _doctests(module):
    # The finder keeps to objects defined in the module: imported ones are tested where
    # they are defined.
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [test for test in finder.find(module, module.__name__) if test.examples]


@pytest.fixture
def _headless_matplotlib():
    """Agg backend for plotting examples; figures closed afterwards."""
    try:
        import matplotlib
    except ImportError:
        yield
        return
    backend = matplotlib.get_backend()
    matplotlib.use("Agg")
    yield
    import matplotlib.pyplot as plt
    plt.close("all")
    matplotlib.use(backend)


@pytest.mark.parametrize("module_name", _module_names())
def test_docstring_examples(module_name, _headless_matplotlib):
    # Every module imports without its optional dependency (plotting and zuko import
    # theirs lazily); the test extra installs matplotlib and zuko, so all examples run.
    module = importlib.import_module(module_name)
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    with warnings.catch_warnings():
        # Examples train for a few epochs only: not converging is expected there.
        warnings.filterwarnings("ignore", message="Stochastic optimizer: maximum iterations")
        for test in _doctests(module):
            runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} docstring example(s) failed in {module_name}"


# The flow families beyond the linear and MLP flows, and their builders (``flow='...'``).
_FLOW_CLASSES = [flows.RealNVPFlow, flows.ResidualFlow, flows.ImplicitFlow, flows.ZukoFlow,
                 flows.NSFFlow, flows.MAFFlow, flows.InjectiveFlow, flows.BiLipschitzMLPFlow]
_FLOW_BUILDERS = [coupling.build_realnvp, residual.build_residual, implicit.build_implicit,
                  zuko.build_nsf, zuko.build_maf, injective.build_injective]
# The builders share one Examples block, the registry's (build_flow).
_SHARED_EXAMPLES = {*_FLOW_BUILDERS}

# Public methods that return nothing (no Returns section needed).
_RETURNS_NOTHING = {"finalize_training", "reset_parameters"}


# The public API whose docstrings must show Parameters (callables taking arguments),
# Returns (functions and methods) and Examples.
def _public_api():
    from flowpca import datasets, plotting

    objects = [flowpca.NormalizingFlowPCA, flows.Flow, flows.LinearFlow, flows.MLPFlow,
               *_FLOW_CLASSES, *_FLOW_BUILDERS, _families.build_flow]
    for module in (datasets, plotting):
        objects += [obj for name, obj in vars(module).items()
                    if inspect.isfunction(obj) and not name.startswith("_")
                    and obj.__module__ == module.__name__]
    # Every public method the estimator defines (not only those known today).
    methods = [getattr(flowpca.NormalizingFlowPCA, name)
               for name, obj in vars(flowpca.NormalizingFlowPCA).items()
               if not name.startswith("_") and inspect.isfunction(obj)]
    return objects + methods


def _public_api_params():
    return [pytest.param(obj, id=obj.__qualname__) for obj in _public_api()]


@pytest.mark.parametrize("obj", _public_api_params())
def test_public_docstrings_have_numpydoc_sections(obj):
    # Examples once: in each class's docstring and each module-level function's, not in
    # every method (the class's Examples show its methods at work).
    doc = inspect.getdoc(obj) or ""
    is_method = "." in obj.__qualname__ and not inspect.isclass(obj)
    takes_arguments = not inspect.isclass(obj) and any(
        name not in ("self", "cls") for name in inspect.signature(obj).parameters)
    sections = (["Parameters"] if inspect.isclass(obj) or takes_arguments else []) + (
        [] if is_method or obj in _SHARED_EXAMPLES else ["Examples"]) + (
        [] if inspect.isclass(obj) else ["Returns"])
    missing = [name for name in sections if f"{name}\n{'-' * len(name)}" not in doc]
    assert not missing, f"{obj.__qualname__} docstring lacks {missing}"


def _flow_methods():
    """Public methods defined by the flow classes themselves: the ``Flow`` contract, the
    linear and MLP flows and the families of ``_FLOW_CLASSES``."""
    methods = []
    for cls in [flows.Flow, flows.LinearFlow, flows.MLPFlow, *_FLOW_CLASSES]:
        for name in vars(cls):
            obj = getattr(cls, name)
            if not name.startswith("_") and (inspect.isfunction(obj) or inspect.ismethod(obj)):
                methods.append(pytest.param(obj, id=f"{cls.__name__}.{name}"))
    return methods


@pytest.mark.parametrize("method", _flow_methods())
def test_flow_methods_have_parameters_and_returns(method):
    doc = inspect.getdoc(method) or ""
    takes_arguments = any(name not in ("self", "cls")
                          for name in inspect.signature(method).parameters)
    sections = (["Parameters"] if takes_arguments else []) + (
        [] if method.__name__ in _RETURNS_NOTHING else ["Returns"])
    missing = [name for name in sections if f"{name}\n{'-' * len(name)}" not in doc]
    assert not missing, f"{method.__qualname__} docstring lacks {missing}"


@pytest.mark.parametrize("name", [name for name, obj in vars(flows.Flow).items()
                                  if not name.startswith("_") and inspect.isfunction(obj)])
def test_flow_contract_methods_have_examples(name):
    # The contract's docstrings are what every family inherits unless it overrides them.
    doc = inspect.getdoc(getattr(flows.Flow, name)) or ""
    assert "Examples\n--------" in doc, f"Flow.{name} docstring lacks Examples"


def _exported_flow_method_names():
    """``(class, name)`` of every public method (properties and attributes excepted) of
    every class that :mod:`flowpca.flows` exports, defined by the class or inherited from
    a flow ancestor (``torch.nn.Module``'s own methods are not flowpca's API)."""
    pairs = []
    for cls_name in flows.__all__:
        cls = getattr(flows, cls_name)
        names = {name for klass in cls.__mro__ if issubclass(klass, flows.Flow)
                 for name, obj in vars(klass).items()
                 if not name.startswith("_")
                 and (isinstance(obj, (staticmethod, classmethod)) or inspect.isfunction(obj))}
        pairs += [(cls, name) for name in sorted(names)]
    return pairs


def _exported_flow_methods():
    return [pytest.param(cls, name, id=f"{cls.__name__}.{name}")
            for cls, name in _exported_flow_method_names()]


@pytest.mark.parametrize("cls, name", _exported_flow_methods())
def test_exported_flow_methods_have_examples(cls, name):
    # inspect.getdoc inherits: an override without a docstring shows its ancestor's
    # (as Sphinx autodoc does), so such overrides count as documented by the contract.
    # A method may instead be shown once in its class's Examples (called there).
    doc = inspect.getdoc(getattr(cls, name)) or ""
    class_examples = (inspect.getdoc(cls) or "").partition("Examples\n--------")[2]
    assert "Examples\n--------" in doc or f".{name}(" in class_examples, \
        f"{cls.__name__}.{name} has no Examples, nor a call in the class's Examples"
