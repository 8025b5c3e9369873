"""Plots of a fitted :class:`~flowpca.NormalizingFlowPCA`: components, local variances, training.

matplotlib is optional: importing :mod:`flowpca` never imports it, and this module imports
it only when a plot is drawn (``pip install "flowpca[plot]"`` installs it).
"""

import numpy as np
from sklearn.utils import _safe_indexing
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["plot_components", "plot_local_variances", "plot_loss_curve"]

# Colours of the arrows of successive components (matplotlib's default cycle, reordered
# to stand out on the default colour map).
_ARROW_COLORS = ("tab:red", "black", "tab:orange")


def _pyplot():
    """``matplotlib.pyplot``, or an ImportError that says how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError('flowpca.plotting needs matplotlib; install it with '
                          'pip install "flowpca[plot]"') from error
    return plt


def _spread_out_rows(X, n_rows):
    """Indices of ``n_rows`` rows of ``X`` spread over the data (farthest-point order from
    the row nearest the mean), deterministic."""
    n_rows = min(n_rows, X.shape[0])
    if n_rows == 0:
        return np.empty(0, dtype=int)
    chosen = [int(np.argmin(np.linalg.norm(X - X.mean(axis=0), axis=1)))]
    distance = np.linalg.norm(X - X[chosen[0]], axis=1)
    for _ in range(n_rows - 1):
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.linalg.norm(X - X[chosen[-1]], axis=1))
    return np.asarray(chosen)


def _feature_labels(model, n_features):
    names = getattr(model, "feature_names_in_", None)
    return [str(name) for name in names] if names is not None else [
        f"$x_{i + 1}$" for i in range(n_features)]


def _check_axes(ax, n_panels, three_d):
    """``ax`` (one Axes or a sequence) as a list of ``n_panels`` Axes of the right kind."""
    axes = list(np.ravel(np.asarray(ax, dtype=object)))
    if len(axes) != n_panels:
        raise ValueError(f"ax must hold one Axes per coloured component ({n_panels}), got "
                         f"{len(axes)}.")
    for axis in axes:
        if (getattr(axis, "name", None) == "3d") != three_d:
            kind = "3-D (projection='3d')" if three_d else "2-D"
            raise ValueError(f"The data are {3 if three_d else 2}-D: ax must be {kind} "
                             f"Axes, got {getattr(axis, 'name', type(axis).__name__)!r}.")
    return axes


def plot_components(model, X, ax=None, *, color_by=(0, 1), n_arrows=40, arrow_length=0.08,
                    cmap="viridis", point_size=6.0, colorbar=True,
                    color_quantiles=(0.01, 0.99)):
    """Data coloured by their components, with the local principal directions as arrows.

    One panel per entry of ``color_by``: a scatter plot of ``X`` (2-D or 3-D data) whose
    colours are the values of that component (:meth:`~flowpca.NormalizingFlowPCA.transform`),
    and, at ``n_arrows`` points spread over the data, arrows along the local principal
    directions ``v_i(x)`` of the first (at most three) components
    (:meth:`~flowpca.NormalizingFlowPCA.local_directions`), with their signs. Arrows all
    have the same length; the local variances are drawn by :func:`plot_local_variances`.

    Parameters
    ----------
    model : NormalizingFlowPCA
        A fitted estimator.
    X : array-like of shape (n_samples, 2) or (n_samples, 3)
        Data to draw, with the features the model was fitted on.
    ax : matplotlib Axes or sequence of Axes, default=None
        One Axes per entry of ``color_by`` (3-D Axes, ``projection='3d'``, for 3-D
        data). None creates a figure with one panel per entry.
    color_by : int or sequence of int, default=(0, 1)
        Zero-based indices of the components that colour the points, one panel each.
        Indices not below ``n_components_`` are skipped; at least one must remain.
    n_arrows : int, default=40
        Number of points that get arrows (0 draws none).
    arrow_length : float, default=0.08
        Arrow length as a fraction of the data's largest extent along a feature.
    cmap : str or Colormap, default='viridis'
        Colour map of the component values.
    point_size : float, default=6.0
        Marker size of the scatter plot (points squared).
    colorbar : bool, default=True
        Whether to add a colour bar to each panel.
    color_quantiles : tuple of two floats in [0, 1] or None, default=(0.01, 0.99)
        Quantiles of each component's values that bound its colour scale (values beyond
        get the end colours). Un-whitened components are heavy-tailed where the local
        variance is large, and a few extreme points would otherwise wash out the colours
        of all the others; None uses the full range.

    Returns
    -------
    axes : ndarray of matplotlib Axes of shape (n_panels,)
        The panels, in the order of ``color_by``; ``axes[0].figure`` is the figure.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``model`` is not fitted.
    ValueError
        If ``X`` does not have 2 or 3 features, or not the model's number of features,
        or ``ax`` does not match the panels.
    ImportError
        If matplotlib is not installed.

    Examples
    --------
    >>> from flowpca import NormalizingFlowPCA
    >>> from flowpca.datasets import make_banana
    >>> from flowpca.plotting import plot_components
    >>> X, _ = make_banana(200, random_state=0)
    >>> model = NormalizingFlowPCA(n_layers=2, max_iter=3, random_state=0).fit(X)
    >>> axes = plot_components(model, X, n_arrows=10)
    >>> len(axes), axes[0].get_title()
    (2, 'Coloured by component 1')
    """
    plt = _pyplot()
    check_is_fitted(model)
    X_input = X  # the model's methods see the user's container (feature names kept)
    X = validate_data(model, X, dtype=[np.float64, np.float32], reset=False)
    n_features = X.shape[1]
    if n_features not in (2, 3):
        raise ValueError(f"plot_components draws 2-D or 3-D data; X has {n_features} "
                         "features. Plot the components themselves (model.transform(X)) "
                         "for higher-dimensional data.")
    three_d = n_features == 3
    if color_quantiles is not None:
        low, high = (float(q) for q in color_quantiles)
        if not 0 <= low < high <= 1:
            raise ValueError("color_quantiles must be an increasing pair in [0, 1] or "
                             f"None, got {color_quantiles!r}.")
    color_by = [int(i) for i in np.atleast_1d(color_by) if 0 <= int(i) < model.n_components_]
    if not color_by:
        raise ValueError(f"color_by selects no component of the model's "
                         f"{model.n_components_}.")
    if ax is None:
        fig = plt.figure(figsize=(4.8 * len(color_by), 4.2), layout="constrained")
        projection = "3d" if three_d else None
        axes = [fig.add_subplot(1, len(color_by), i + 1, projection=projection)
                for i in range(len(color_by))]
    else:
        axes = _check_axes(ax, len(color_by), three_d)

    components = model.transform(X_input)
    rows = _spread_out_rows(X, n_arrows)
    n_arrow_components = min(model.n_components_, len(_ARROW_COLORS))
    directions = np.empty((0, n_features, n_arrow_components))
    if rows.size:
        directions = model.local_directions(_safe_indexing(X_input, rows))[
            :, :, :n_arrow_components]
    extent = np.ptp(X, axis=0).max() if X.shape[0] else 1.0
    directions = directions * arrow_length * extent
    labels = _feature_labels(model, n_features)

    for axis, component in zip(axes, color_by):
        values = components[:, component]
        limits = {}
        if color_quantiles is not None and values.size:
            limits = dict(zip(("vmin", "vmax"), np.quantile(values, color_quantiles)))
        points = axis.scatter(*X.T, c=values, cmap=cmap, s=point_size, **limits)
        for i in range(n_arrow_components if rows.size else 0):
            arrow_kw = dict(color=_ARROW_COLORS[i], label=f"$v_{i + 1}(x)$")
            if three_d:
                axis.quiver(*X[rows].T, *directions[:, :, i].T, arrow_length_ratio=0.3,
                            linewidth=1.0, **arrow_kw)
            else:
                axis.quiver(*X[rows].T, *directions[:, :, i].T, angles="xy",
                            scale_units="xy", scale=1.0, width=0.004, **arrow_kw)
        axis.set_xlabel(labels[0])
        axis.set_ylabel(labels[1])
        if three_d:
            axis.set_zlabel(labels[2])
        else:
            axis.set_aspect("equal", adjustable="datalim")
        axis.set_title(f"Coloured by component {component + 1}")
        if rows.size:
            axis.legend(loc="upper left", fontsize="small")
        if colorbar:
            axis.figure.colorbar(points, ax=axis, label=f"component {component + 1}",
                                 shrink=0.8)
    return np.asarray(axes, dtype=object)


def plot_local_variances(model, X, ax=None, *, quantiles=(0.1, 0.9)):
    """Spectra of local variances over the data, on a log scale, with the floor ``alpha``.

    At each point the local variances are ``s_i(x)^-2`` for the singular values of the
    flow's Jacobian (:meth:`~flowpca.NormalizingFlowPCA.local_variances`), sorted largest
    first. The plot shows, for each rank ``i``, their mean over ``X`` (a line) and their
    spread between two quantiles (a band), the floor ``alpha`` as a horizontal line, and
    where the model's ``n_components_`` kept components end. Ranks whose variances sit on
    the floor are directions the data do not occupy: their number is ``n_features`` minus
    the intrinsic dimension.

    Parameters
    ----------
    model : NormalizingFlowPCA
        A fitted estimator.
    X : array-like of shape (n_samples, n_features)
        Points at which to evaluate the local variances (e.g. the training data).
    ax : matplotlib Axes, default=None
        Axes to draw on; None creates a figure.
    quantiles : tuple of two floats in [0, 1], default=(0.1, 0.9)
        Lower and upper quantile of the band over points.

    Returns
    -------
    ax : matplotlib Axes
        The Axes drawn on.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``model`` is not fitted.
    ValueError
        If ``X`` does not have the model's features or ``quantiles`` is not an
        increasing pair in ``[0, 1]``.
    ImportError
        If matplotlib is not installed.

    Notes
    -----
    With ``alpha=0`` there is no floor and no horizontal line is drawn.

    Examples
    --------
    >>> from flowpca import NormalizingFlowPCA
    >>> from flowpca.datasets import make_embedded_plane
    >>> from flowpca.plotting import plot_local_variances
    >>> X, _ = make_embedded_plane(200, random_state=0)
    >>> model = NormalizingFlowPCA(flow="linear", alpha=1e-4).fit(X)
    >>> ax = plot_local_variances(model, X)
    >>> ax.get_yscale()
    'log'
    """
    plt = _pyplot()
    check_is_fitted(model)
    lower, upper = (float(q) for q in quantiles)
    if not 0.0 <= lower < upper <= 1.0:
        raise ValueError(f"quantiles must be an increasing pair in [0, 1], got {quantiles!r}.")
    variances = model.local_variances(X)
    if variances.shape[0] == 0:
        raise ValueError("X has no samples.")
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.0), layout="constrained")
    ranks = np.arange(1, variances.shape[1] + 1)
    band = np.quantile(variances, [lower, upper], axis=0)
    ax.fill_between(ranks, band[0], band[1], alpha=0.3,
                    label=f"{lower:.0%}-{upper:.0%} of points")
    ax.plot(ranks, variances.mean(axis=0), marker="o", label="mean over points")
    if model.alpha_ > 0:
        ax.axhline(model.alpha_, color="tab:red", linestyle="--",
                   label=rf"floor $\alpha$ = {model.alpha_:g}")
    if model.n_components_ < variances.shape[1]:
        ax.axvline(model.n_components_ + 0.5, color="gray", linestyle=":",
                   label=f"n_components_ = {model.n_components_}")
    ax.set_yscale("log")
    ax.set_xticks(ranks)
    ax.set_xlabel("rank $i$ (largest local variance first)")
    ax.set_ylabel(r"local variance $s_i(x)^{-2}$")
    ax.set_title("Local variance spectrum")
    ax.legend(fontsize="small")
    return ax


def plot_loss_curve(model, ax=None):
    """Training loss per epoch and, with early stopping, the validation log-likelihood.

    The loss is the penalized negative log-likelihood per sample that Adam minimizes
    (without the constant ``D/2 log 2 pi``): ``||f(x)||^2/2 - log|det J_f(x)| +
    alpha/2 ||J_f(x)||_F^2``. With ``early_stopping=True`` the held-out mean
    log-likelihood per epoch (``validation_scores_``, higher is better) is drawn on a
    second y axis on the right.

    Parameters
    ----------
    model : NormalizingFlowPCA
        An estimator fitted by gradient descent (``solver='adam'``, the default for every
        flow but 'linear').
    ax : matplotlib Axes, default=None
        Axes to draw on; None creates a figure.

    Returns
    -------
    ax : matplotlib Axes
        The Axes of the training loss (the validation axis is ``ax``'s twin).

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``model`` is not fitted.
    ValueError
        If ``model`` has no loss curve (fitted by the closed-form 'exact' solver).
    ImportError
        If matplotlib is not installed.

    Examples
    --------
    >>> from flowpca import NormalizingFlowPCA
    >>> from flowpca.datasets import make_banana
    >>> from flowpca.plotting import plot_loss_curve
    >>> X, _ = make_banana(200, random_state=0)
    >>> model = NormalizingFlowPCA(n_layers=2, max_iter=4, random_state=0).fit(X)
    >>> ax = plot_loss_curve(model)
    >>> len(ax.lines[0].get_xdata())
    4
    """
    plt = _pyplot()
    check_is_fitted(model)
    loss_curve = getattr(model, "loss_curve_", None)
    if loss_curve is None:
        raise ValueError(f"This {type(model).__name__} has no loss curve: it was fitted by "
                         "the closed-form 'exact' solver. Fit with solver='adam' to train "
                         "by gradient descent.")
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.0), layout="constrained")
    epochs = np.arange(1, len(loss_curve) + 1)
    ax.plot(epochs, loss_curve, color="tab:blue", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (nats per sample)")
    ax.set_title("Training")
    handles = ax.get_lines()[:]
    scores = getattr(model, "validation_scores_", None)
    if scores:
        validation_ax = ax.twinx()
        handles += validation_ax.plot(np.arange(1, len(scores) + 1), scores,
                                      color="tab:orange", label="validation log-likelihood")
        validation_ax.set_ylabel("validation log-likelihood (nats per sample)")
    ax.legend(handles=handles, fontsize="small")
    return ax
