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

OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _module_names():
    names = [flowpca.__name__]
    for info in pkgutil.walk_packages(flowpca.__path__, prefix=f"{flowpca.__name__}."):
        names.append(info.name)
    return sorted(names)


def _import(name):
    try:
        return importlib.import_module(name)
    except ImportError as error:  # a module of an optional dependency (zuko, ...)
        pytest.skip(f"{name} needs an optional dependency: {error}")


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
    module = _import(module_name)
    if module_name == "flowpca.plotting":
        pytest.importorskip("matplotlib")
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    with warnings.catch_warnings():
        # Examples train for a few epochs only: not converging is expected there.
        warnings.filterwarnings("ignore", message="Stochastic optimizer: maximum iterations")
        for test in _doctests(module):
            runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} docstring example(s) failed in {module_name}"


# The public API whose docstrings must show Parameters (callables taking arguments),
# Returns (functions and methods) and Examples.
def _public_api():
    from flowpca import datasets, flows, plotting

    objects = [flowpca.NormalizingFlowPCA, flows.Flow, flows.LinearFlow, flows.MLPFlow]
    for module in (datasets, plotting):
        objects += [obj for name, obj in vars(module).items()
                    if inspect.isfunction(obj) and not name.startswith("_")
                    and obj.__module__ == module.__name__]
    methods = [getattr(flowpca.NormalizingFlowPCA, name) for name in (
        "fit", "transform", "inverse_transform", "score_samples", "score", "sample",
        "local_variances", "local_directions", "local_covariance", "get_feature_names_out")]
    return objects + methods


@pytest.mark.parametrize("obj", _public_api(), ids=lambda obj: obj.__qualname__)
def test_public_docstrings_have_numpydoc_sections(obj):
    doc = inspect.getdoc(obj) or ""
    sections = ["Parameters", "Examples"] + ([] if inspect.isclass(obj) else ["Returns"])
    missing = [name for name in sections if f"{name}\n{'-' * len(name)}" not in doc]
    assert not missing, f"{obj.__qualname__} docstring lacks {missing}"
