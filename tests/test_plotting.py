"""flowpca.plotting, headless (Agg): figures, artists, and the errors for bad input."""

import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.quiver import Quiver  # noqa: E402

from flowpca import NormalizingFlowPCA  # noqa: E402
from flowpca.datasets import make_banana, make_embedded_plane, make_s_curve_gaussian  # noqa: E402
from flowpca.plotting import plot_components, plot_local_variances, plot_loss_curve  # noqa: E402

# Tiny, quick fits: the plots are under test, not the models.
FAST = dict(flow="mlp", n_layers=2, max_iter=3, random_state=0)
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def banana():
    X, _ = make_banana(120, random_state=0)
    return NormalizingFlowPCA(**FAST).fit(X), X


@pytest.fixture(scope="module")
def s_curve():
    X, _ = make_s_curve_gaussian(100, random_state=0)
    return NormalizingFlowPCA(n_components=2, **FAST).fit(X), X


@pytest.fixture(scope="module")
def plane():
    """A linear model fitted in closed form on a plane in 3-D: one variance on the floor."""
    X, _ = make_embedded_plane(150, random_state=0)
    return NormalizingFlowPCA(n_components=2, flow="linear", alpha=1e-3).fit(X), X


# ---------------------------------------------------------------- optional dependency
def test_importing_flowpca_does_not_import_matplotlib():
    code = ("import sys, flowpca, flowpca.datasets, flowpca.plotting; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("plot", ["components", "local_variances", "loss_curve"])
def test_missing_matplotlib_says_how_to_install(monkeypatch, banana, plot):
    model, X = banana
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    call = {"components": lambda: plot_components(model, X),
            "local_variances": lambda: plot_local_variances(model, X),
            "loss_curve": lambda: plot_loss_curve(model)}[plot]
    with pytest.raises(ImportError, match=r'pip install "flowpca\[plot\]"'):
        call()


# ---------------------------------------------------------------- plot_components
def test_components_2d_panels_points_and_arrows(banana):
    model, X = banana
    axes = plot_components(model, X, n_arrows=9)
    assert axes.shape == (2,)
    figure = axes[0].figure
    assert len(figure.axes) == 4  # two panels and their colour bars
    components = model.transform(X)
    for panel, ax in enumerate(axes):
        assert ax.get_title() == f"Coloured by component {panel + 1}"
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("$x_1$", "$x_2$")
        scatter = ax.collections[0]
        assert scatter.get_offsets().shape == (X.shape[0], 2)
        np.testing.assert_allclose(scatter.get_array(), components[:, panel])
        quivers = [c for c in ax.collections if isinstance(c, Quiver)]
        assert [q.N for q in quivers] == [9, 9]  # one field per component
        assert [q.get_label() for q in quivers] == ["$v_1(x)$", "$v_2(x)$"]
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["$v_1(x)$", "$v_2(x)$"]


def test_component_arrows_are_the_local_directions(banana):
    model, X = banana
    quivers = [c for c in plot_components(model, X, n_arrows=6)[0].collections
               if isinstance(c, Quiver)]
    for i, quiver in enumerate(quivers):
        bases = quiver.get_offsets()
        rows = [int(np.flatnonzero((X == base).all(axis=1))[0]) for base in bases]
        assert len(set(rows)) == 6  # distinct data points
        arrows = np.column_stack([quiver.U, quiver.V])
        expected = model.local_directions(X[rows])[:, :, i]
        lengths = np.linalg.norm(arrows, axis=1)
        np.testing.assert_allclose(lengths, lengths[0])  # all the same length
        np.testing.assert_allclose(arrows / lengths[:, None], expected, atol=1e-12)


def test_components_3d(s_curve):
    model, X = s_curve
    axes = plot_components(model, X, n_arrows=7)
    assert all(ax.name == "3d" for ax in axes)
    ax = axes[0]
    assert ax.get_zlabel() == "$x_3$"
    assert len(ax.collections[0].get_array()) == X.shape[0]
    ax.figure.canvas.draw()
    arrows = ax.collections[1:]
    assert [a.get_label() for a in arrows] == ["$v_1(x)$", "$v_2(x)$"]
    assert [len(a.get_segments()) for a in arrows] == [3 * 7, 3 * 7]  # shaft + 2 head lines


def test_components_single_panel_on_given_axes(banana):
    model, X = banana
    fig, ax = plt.subplots()
    axes = plot_components(model, X, ax=ax, color_by=1, n_arrows=0, colorbar=False)
    assert list(axes) == [ax] and fig.axes == [ax]
    assert ax.get_title() == "Coloured by component 2"
    assert not any(isinstance(c, Quiver) for c in ax.collections)
    assert ax.get_legend() is None


def test_components_one_component_model_draws_one_arrow_field(banana):
    _, X = banana
    model = NormalizingFlowPCA(n_components=1, **FAST).fit(X)
    axes = plot_components(model, X, n_arrows=5)  # color_by=(0, 1): component 2 skipped
    assert len(axes) == 1
    assert [q.N for q in axes[0].collections if isinstance(q, Quiver)] == [5]


def test_components_feature_names_label_the_axes(banana):
    import pandas as pd
    _, X = banana
    frame = pd.DataFrame(X, columns=["width", "height"])
    model = NormalizingFlowPCA(**FAST).fit(frame)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the model sees the frame: no feature-name warning
        ax = plot_components(model, frame, n_arrows=3)[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("width", "height")


def test_components_bad_input(banana, s_curve):
    model, X = banana
    with pytest.raises(NotFittedError):
        plot_components(NormalizingFlowPCA(flow="mlp"), X)
    with pytest.raises(ValueError, match="features"):
        plot_components(model, X[:, :1])
    four_d = np.random.RandomState(0).normal(size=(50, 4))
    with pytest.raises(ValueError, match="2-D or 3-D"):
        plot_components(NormalizingFlowPCA(flow="linear").fit(four_d), four_d)
    with pytest.raises(ValueError, match="selects no component"):
        plot_components(model, X, color_by=5)
    _, axes = plt.subplots(1, 3)
    with pytest.raises(ValueError, match="one Axes per coloured component"):
        plot_components(model, X, ax=axes)
    model_3d, X_3d = s_curve
    _, axes = plt.subplots(1, 2)
    with pytest.raises(ValueError, match="projection='3d'"):
        plot_components(model_3d, X_3d, ax=axes)


# ---------------------------------------------------------------- plot_local_variances
def test_local_variances_spectrum_floor_and_cut(plane):
    model, X = plane
    ax = plot_local_variances(model, X)
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel().startswith("rank")
    mean_line, floor, cut = ax.lines
    np.testing.assert_allclose(mean_line.get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(mean_line.get_ydata(), model.local_variances(X).mean(axis=0))
    np.testing.assert_allclose(floor.get_ydata(), model.alpha)  # horizontal line at alpha
    assert floor.get_label() == r"floor $\alpha$ = 0.001"
    np.testing.assert_allclose(cut.get_xdata(), model.n_components_ + 0.5)
    # The plane's normal direction sits exactly on the floor.
    np.testing.assert_allclose(mean_line.get_ydata()[-1], model.alpha, rtol=1e-6)
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1
    assert len(ax.get_legend().get_texts()) == 4


def test_local_variances_band_spans_the_quantiles(banana):
    model, X = banana
    ax = plot_local_variances(model, X, quantiles=(0.0, 1.0))
    band = ax.collections[0].get_paths()[0].vertices
    variances = model.local_variances(X)
    assert band[:, 1].min() == pytest.approx(variances.min())
    assert band[:, 1].max() == pytest.approx(variances.max())


def test_local_variances_without_floor_or_cut(banana):
    _, X = banana
    model = NormalizingFlowPCA(flow="linear", alpha=0.0).fit(X)
    _, ax = plt.subplots()
    assert plot_local_variances(model, X, ax=ax) is ax
    assert len(ax.lines) == 1  # no floor (alpha=0), no cut (all components kept)


def test_local_variances_bad_input(banana):
    model, X = banana
    with pytest.raises(NotFittedError):
        plot_local_variances(NormalizingFlowPCA(flow="mlp"), X)
    with pytest.raises(ValueError, match="quantiles"):
        plot_local_variances(model, X, quantiles=(0.9, 0.1))
    with pytest.raises(ValueError, match="features"):
        plot_local_variances(model, np.ones((5, 3)))


# ---------------------------------------------------------------- plot_loss_curve
def test_loss_curve(banana):
    model, _ = banana
    ax = plot_loss_curve(model)
    (line,) = ax.lines
    np.testing.assert_allclose(line.get_xdata(), np.arange(1, model.n_iter_ + 1))
    np.testing.assert_allclose(line.get_ydata(), model.loss_curve_)
    assert ax.get_xlabel() == "epoch"
    assert len(ax.figure.axes) == 1  # no validation axis without early stopping


def test_loss_curve_with_validation_scores(banana):
    _, X = banana
    model = NormalizingFlowPCA(early_stopping=True, **FAST).fit(X)
    ax = plot_loss_curve(model)
    validation_ax = next(a for a in ax.figure.axes if a is not ax)
    (scores,) = validation_ax.lines
    np.testing.assert_allclose(scores.get_ydata(), model.validation_scores_)
    assert "validation" in validation_ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "training loss", "validation log-likelihood"]


def test_loss_curve_errors(plane):
    model, _ = plane  # closed-form exact solver
    with pytest.raises(ValueError, match="no loss curve.*'exact'"):
        plot_loss_curve(model)
    with pytest.raises(NotFittedError):
        plot_loss_curve(NormalizingFlowPCA(flow="mlp"))


def test_component_colour_scale_ignores_the_extreme_tails(banana):
    model, X = banana
    components = model.transform(X)
    robust, full = (plot_components(model, X, n_arrows=0, color_quantiles=quantiles)[0]
                    for quantiles in ((0.05, 0.95), None))
    norm = robust.collections[0].norm
    np.testing.assert_allclose((norm.vmin, norm.vmax),
                               np.quantile(components[:, 0], (0.05, 0.95)))
    norm = full.collections[0].norm
    np.testing.assert_allclose((norm.vmin, norm.vmax),
                               (components[:, 0].min(), components[:, 0].max()))
    with pytest.raises(ValueError, match="color_quantiles"):
        plot_components(model, X, color_quantiles=(0.9, 0.1))
