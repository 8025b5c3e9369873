"""NormalizingFlowPCA: principal components and a density from a normalizing flow.

The estimator holds the parameters, decides the model once in :meth:`fit` and delegates:
the density (data checks, the closed form, training, scoring, sampling) to
:mod:`flowpca.density`; the components (transform, inverse, local geometry) to the
component map of :mod:`flowpca.components` chosen at fit; the families and their
defaults to :mod:`flowpca.flows`.
"""

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context, clone
from sklearn.utils import check_array, check_random_state, metadata_routing
from sklearn.utils._param_validation import Interval, RealNotInt, StrOptions
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data

from . import _device, _persistence, density
from ._chunks import LazilyCentered, flow_device_dtype
from ._version import __version__
from .components import intrinsic_dimension, make_component_map
from .flows import Flow
from .flows._families import (AUTO_PARAMETERS, FlowSettings, family_names, n_validation,
                              resolve_settings, resolve_solver)

# Fitted attributes that only gradient-trained models have.
_SOLVER_ATTRIBUTES = ("loss_curve_", "n_iter_", "validation_scores_", "alpha_scores_")


def _n_components_from_ratio(ratio, fraction):
    """Smallest number of components whose cumulative ratio exceeds ``fraction`` (PCA's
    rule)."""
    cumulative = np.cumsum(ratio)
    return int(min(np.searchsorted(cumulative, fraction, side="right") + 1, ratio.size))


def _resolve_n_components(n_components, ratio, n_features, intrinsic_dimension):
    """``n_components_`` from the parameter, the explained-variance ``ratio`` and the
    intrinsic dimension."""
    if n_components is None:
        return n_features
    if isinstance(n_components, str):  # 'auto'
        return max(1, intrinsic_dimension)
    if isinstance(n_components, Integral):
        return int(n_components)
    return _n_components_from_ratio(ratio, n_components)


class NormalizingFlowPCA(TransformerMixin, BaseEstimator):
    """Principal component analysis for non-Gaussian data with a normalizing flow.

    Fits a flow ``y = f(x)`` that maps the centered data to a standard normal by maximum
    likelihood with a Tikhonov penalty ``alpha/2 ||J_f(x)||_F^2`` on its Jacobian, and
    reads the data's local principal components off the Jacobian's singular value
    decomposition ``J_f(x) = U S V^T`` (Feinman & Parthasarathy, 2020): local variances
    ``s_i^-2`` along the columns of ``V``. With ``flow='linear'`` the model is exactly
    PCA with covariance ``Sigma + alpha I``.

    Parameters
    ----------
    n_components : int, float, 'auto' or None, default=None
        Number of components returned by :meth:`transform`. An int in
        ``[1, n_features]``; a float in ``(0, 1)`` selects the smallest number of
        components whose explained-variance ratio reaches it (as in
        :class:`~sklearn.decomposition.PCA`); 'auto' keeps ``intrinsic_dimension_`` of
        them (at least 1); None keeps all ``n_features``. The density
        model is always full-dimensional, whatever this is.
    flow : {'nsf', 'mlp', 'linear', 'realnvp', 'residual', 'implicit', 'maf', \
            'injective'}, Flow or zuko.flows.Flow, default='nsf'
        The family (``n_layers`` is its depth; see each class for the details):

        - 'nsf' (the default) and 'maf': zuko's neural spline flow (rational-quadratic
          spline couplings) and masked autoregressive flow after a fixed standardization
          (:class:`flowpca.flows.NSFFlow`, :class:`flowpca.flows.MAFFlow`); 'nsf' had the
          best held-out likelihood of the families at equal CPU time on two moons and,
          with 'maf', on the paper's sine (``benchmarks/results/defaults.md``), and its
          integrated components recover the paper's S-curve factors.
        - 'mlp': the paper's invertible MLP (:class:`flowpca.flows.MLPFlow`).
        - 'linear': ``f(x) = W x``, i.e. PCA, solved in closed form.
        - 'realnvp': RealNVP, the paper's comparator (:class:`flowpca.flows.RealNVPFlow`).
        - 'residual' and 'implicit': invertible residual and implicit flows
          (:class:`flowpca.flows.ResidualFlow`, :class:`flowpca.flows.ImplicitFlow`).
        - 'injective': a rectangular flow ``x = mean_ + g(z)`` from an
          ``n_components``-dimensional latent (:class:`flowpca.flows.InjectiveFlow`; for
          ``n_components='auto'`` the ``intrinsic_dimension_`` of a preliminary 'mlp'
          fit): :meth:`transform` returns ``z``, :meth:`inverse_transform` and
          :meth:`sample` give points on the manifold, :meth:`score_samples` the density
          on it and ``explained_variance_`` the latent coordinates' variances.
        - A :class:`flowpca.flows.Flow` instance is the initial flow (copied, never
          modified); an unconditional ``zuko.flows.Flow`` (or lazy transform) is copied,
          wrapped in :class:`flowpca.flows.ZukoFlow` and standardized on the data.
    alpha : float or 'auto', default='auto'
        Weight of the Tikhonov penalty on the flow's Jacobian. It has units of variance:
        for the linear flow, the fitted covariance is ``Sigma + alpha I``, so ``alpha`` is
        a floor on every local variance. 'auto': for 'nsf' and 'maf' (and wrapped zuko
        flows) the value of best held-out likelihood among ``0`` and ``1e-3`` times the
        mean feature variance, inside one fit (trained with 0, a copy fine-tuned with the
        other value for 5 % of the epochs; the scores are in ``alpha_scores_``; without
        early stopping the first value is kept); the paper's ``5e-5`` for the others.
        The value used is ``alpha_``; ``GridSearchCV`` over explicit values works as well
        (:meth:`score` is the held-out log-likelihood).
    n_layers : int or 'auto', default='auto'
        The family's depth (``n_layers_``): 'auto' is 3 for 'nsf' and 'maf', 6 for
        'realnvp' (the paper's comparator), 4 for 'injective' and the paper's 8 for the
        others.
    activation : {'asinh', 'leaky_softplus'}, default='asinh'
        Invertible nonlinearity of the 'mlp' flow: ``asinh`` (the paper's) or
        ``0.1 u + 0.9 softplus(u)``.
    flow_params : dict, default=None
        Further keyword arguments of the flow family named by ``flow`` (its architecture
        beyond ``n_layers``), checked when fitting: an unknown key raises ``ValueError``
        listing the accepted ones. Each family's builder documents its keys and
        defaults: 'mlp' ``noise_scale``, ``hidden_scale`` and ``lipschitz`` (a float
        ``L > 1`` bounds every layer's singular values to ``[1/L, L]``; see
        :func:`flowpca.flows._families.build_mlp`); 'nsf' and 'maf' ``hidden_features``,
        'nsf' also ``bins`` and ``bound`` (:func:`flowpca.flows.zuko.build_nsf`);
        'realnvp' ``hidden_features`` and ``scale_clamp``
        (:func:`flowpca.flows.coupling.build_realnvp`); 'residual' and 'implicit'
        ``hidden_features``, ``lipschitz`` and the settings of their log-determinant
        estimator and inversions (:func:`flowpca.flows.residual.build_residual`);
        'injective' ``latent_layers``, ``noise_variance``, ``volume`` and ``n_probes``
        (:func:`flowpca.flows.injective.build_injective`); 'linear' none.
    penalty_estimator : {'auto', 'exact', 'hutchinson'}, default='auto'
        How the Jacobian's squared Frobenius norm in the penalty is computed during
        training (only when ``alpha > 0``): 'exact' pushes the identity through the flow
        (about ``n_features`` times the cost of a forward pass), 'hutchinson' uses the
        unbiased one-probe estimate ``||J eps||^2``, ``eps ~ N(0, I)``; 'auto' is
        'hutchinson' for zuko's flows (one backward pass instead of ``n_features``) and,
        for the others, 'exact' for up to 8 features and 'hutchinson' above.
    svd_solver : {'auto', 'full', 'randomized'}, default='auto'
        How the per-point components are computed: 'full' takes the SVD of each point's
        ``D x D`` Jacobian; 'randomized' runs subspace iteration on the local covariance
        with the flow's inverse-Jacobian products only (no ``D x D`` decomposition);
        'auto' is 'randomized' from 512 features when ``n_components_`` is at most a
        16th of them (where it measured faster), else 'full'.
    component_map : {'auto', 'projected', 'integrated'}, default='auto'
        What :meth:`transform` returns for a nonlinear flow. 'projected' is the paper's
        ``S(x)^-1 U(x)^T f(x)``, a global coordinate where the flow maps the data
        manifold onto a flat image in latent space (as the 'mlp' flow does).
        'integrated' is the coordinate whose gradient is the tracked local frame,
        ``dc = V(x)^T dx``, integrated by least squares over a neighbour graph of
        reference training points and extended to new points from the nearest of them
        (see :mod:`flowpca.components._integration`): it follows the local directions wherever the
        flow bends the manifold's image, as spline and autoregressive flows do. 'auto'
        is 'integrated' for zuko's flows ('nsf', 'maf' or a zuko flow instance) and
        'projected' for the others. Both equal PCA's transform for the linear flow;
        'injective' flows return their latent coordinates either way.
    inverse_tol : float, default=1e-8
        Residual (in component units) at which :meth:`inverse_transform` stops for a
        nonlinear flow.
    inverse_max_iter : int, default=100
        Iterations at most of each stage of :meth:`inverse_transform` with a nonlinear
        flow.
    solver : {'auto', 'exact', 'adam'}, default='auto'
        'exact' solves the linear flow in closed form (eigendecomposition of
        ``Sigma + alpha I``); 'adam' trains any flow by mini-batch gradient descent;
        'auto' is 'exact' for the linear flow and 'adam' otherwise.
    max_iter : int or 'auto', default='auto'
        Maximum number of epochs for 'adam'. 'auto': for 'nsf' and 'maf', about 1 000
        optimizer steps within 50 to 250 epochs; 1000 for 'injective'; 2000 for the
        others.
    batch_size : int or 'auto', default='auto'
        Mini-batch size for 'adam' (capped at the number of samples). 'auto': for 'nsf'
        and 'maf' a quarter of the training rows within 64 to 512 (4 steps per epoch up
        to 2 048 rows); 100 for 'injective'; 200 for the others.
    learning_rate_init : float or 'auto', default='auto'
        Initial (for 'cosine': peak) Adam step size. 'auto': 1e-2 for 'nsf', 'maf' and
        'injective', 3e-2 for the others.
    learning_rate : {'auto', 'cosine', 'adaptive', 'constant'}, default='auto'
        'cosine' warms up linearly over the first 5 % of the ``max_iter`` epochs' steps
        (from a tenth of ``learning_rate_init``) and then anneals to zero along a half
        cosine; a plateau of ``n_iter_no_change`` epochs ends it early. 'adaptive'
        divides the step size by 5 whenever the loss (or validation score) stops
        improving by ``tol`` for ``n_iter_no_change`` epochs, and stops when it falls
        below 1e-6; 'constant' stops at the first such plateau. 'auto' is 'cosine' for
        'nsf' and 'maf', 'adaptive' for the others.
    tol : float, default=1e-4
        Improvement (nats per sample) below which an epoch counts as no progress.
    n_iter_no_change : int or 'auto', default='auto'
        Epochs without progress tolerated before the plateau rule above applies. 'auto':
        50 for 'nsf' and 'maf', 40 for the others.
    early_stopping : bool or 'auto', default='auto'
        Hold out ``validation_fraction`` of the data, follow its log-likelihood for
        convergence, and keep the weights that scored best on it. 'auto' is True for
        'nsf' and 'maf' and False for the others (the paper's model trains on all the
        data). Every 'auto' above and how it was measured is in the user guide's
        :ref:`defaults` page (``benchmarks/results/defaults.md``).
    validation_fraction : float, default=0.1
        Fraction of the training data held out when ``early_stopping`` is True.
    device : {'auto', 'cpu', 'cuda'}, str or torch.device, default='auto'
        Where the flow is trained and evaluated; 'auto' picks CUDA when available.
    dtype : {'auto', 'float64', 'float32'}, default='auto'
        Floating point type of the flow: 'auto' is float64 on CPU and float32 on GPUs.
        With 'auto' on a CPU, 'nsf' and 'maf' train in float32 and the fitted flow is cast
        to float64, in which every result is computed.
    random_state : int, RandomState instance or None, default=None
        Seeds initialization, batch order, validation split, penalty probes and
        :meth:`sample`. An int makes every result reproducible bit for bit on CPU.
    verbose : int, default=0
        Print the loss at every epoch when positive.
    intrinsic_dimension_threshold : 'gap' or float, default='gap'
        How ``intrinsic_dimension_`` (and ``n_components='auto'``) separates the
        manifold's components from the noise, from the typical local variances (see
        :func:`flowpca.components.intrinsic_dimension`). 'gap': scale-free, the
        manifold ends at the last gap of the log-variance spectrum at least 0.6 times
        its largest gap (the full dimension when no gap reaches a factor of 10); chosen
        on half of a suite of 18 sets of known dimension and checked on the other
        half (``benchmarks/intrinsic_dimension.py``: exact on 88 % of its 162 cases,
        scikit-dimension's best estimator there, MLE, on 83 %). A float: the absolute
        rule of earlier versions, a component counts when its variance exceeds this many times
        the floor ``alpha`` (``1e-12`` times the largest variance when ``alpha`` is 0);
        it depends on the data's scale and on ``alpha``.

    Attributes
    ----------
    mean_ : ndarray of shape (n_features,)
        Per-feature mean of the training data.
    n_components_ : int
        Number of components kept.
    intrinsic_dimension_ : int
        The dimension of the data's manifold as the flow sees it: the rule of
        ``intrinsic_dimension_threshold`` applied to the typical local variances
        (geometric mean over the training data; the variances themselves for the linear
        flow; the latent dimension of an injective flow). Set whatever
        ``n_components`` is. :meth:`local_intrinsic_dimension` gives it point by point,
        for data whose dimension varies.
    components_ : ndarray of shape (`n_components_`, n_features)
        Principal axes (linear flow only; local directions vary with ``x`` otherwise).
    explained_variance_ : ndarray of shape (`n_components_`,)
        Variance of each component; for nonlinear flows, the mean local variance over the
        training data (over 1 000 training points drawn at random when there are more).
    explained_variance_ratio_ : ndarray of shape (`n_components_`,)
        ``explained_variance_`` divided by the total variance of all ``n_features``
        components.
    typical_local_variances_ : ndarray of shape (n_features,)
        The spectrum ``intrinsic_dimension_`` is read from, largest first: for nonlinear
        flows the geometric mean over the same training points of the local variances
        (heavy-tailed: a few points where the flow is loose dominate their arithmetic
        mean, ``explained_variance_``); for the linear flow its variances; for an
        injective flow the variances of its latent coordinates (``n_components_`` of
        them).
    flow_ : Flow
        The fitted torch module (maps centered data to the latent space).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.
    n_layers_, max_iter_, batch_size_, learning_rate_init_, learning_rate_, \
    early_stopping_, penalty_estimator_, n_iter_no_change_ : as the parameters
        The values the fit used: the parameters, with 'auto' resolved for the family
        and the training set's size (see each parameter).
    alpha_ : float
        The penalty weight (variance floor) the fit used: ``alpha``, or the value chosen
        for ``alpha='auto'``.
    alpha_scores_ : list of (float, float) or None
        For ``alpha='auto'`` chosen by held-out likelihood: each candidate ``alpha`` and
        the best held-out mean log-likelihood it reached; None otherwise.
    n_iter_ : int
        Epochs run by 'adam' (not counting the fine-tunes of ``alpha='auto'``); 1 for the
        closed-form 'exact' solver.
    loss_curve_ : list of float
        Mean training loss per epoch ('adam' only).
    validation_scores_ : list of float or None
        Held-out mean log-likelihood per epoch when ``early_stopping`` is True.
    gaussian_baseline_score_ : float
        Mean log-likelihood on the training data of the linear flow's optimum, the
        Gaussian with covariance ``Sigma + alpha I``, in closed form from the eigenvalues
        ``lambda_i`` of the training covariance:
        ``-1/2 sum_i (log(2 pi (lambda_i + alpha)) + lambda_i / (lambda_i + alpha))``
        (``+inf`` for a singular covariance with ``alpha=0``). With ``early_stopping``
        the training data are those left after the validation split.
    gaussian_baseline_gain_ : float
        Nats per sample the fitted model gains over that optimum on the training data:
        0 (to rounding) for the linear flow's exact solution, positive where a nonlinear
        flow captures non-Gaussian structure.
    validation_gaussian_baseline_gain_ : float or None
        The same gain on the held-out data when ``early_stopping`` is True (baseline
        fitted on the training part), else None.

    See Also
    --------
    sklearn.decomposition.PCA : The linear special case.

    References
    ----------
    R. Feinman and N. Parthasarathy, "A Linear Systems Theory of Normalizing Flows",
    arXiv:2007.06280, 2020.

    Examples
    --------
    The linear flow is PCA, and its density the Gaussian with covariance
    ``Sigma + alpha I``:

    >>> import numpy as np
    >>> from scipy.stats import multivariate_normal
    >>> from sklearn.decomposition import PCA
    >>> from flowpca import NormalizingFlowPCA
    >>> from flowpca.datasets import make_embedded_plane, make_sine_wave
    >>> X, _ = make_sine_wave(200, random_state=0)
    >>> linear = NormalizingFlowPCA(n_components=2, flow="linear", alpha=1e-3).fit(X)
    >>> np.allclose(linear.transform(X), PCA(n_components=2).fit_transform(X))
    True
    >>> gaussian = multivariate_normal(X.mean(axis=0),
    ...                                np.cov(X.T, bias=True) + 1e-3 * np.eye(3))
    >>> np.allclose(linear.score_samples(X[:5]), gaussian.logpdf(X[:5]))
    True
    >>> np.allclose(linear.local_covariance(X[:1])[0], gaussian.cov)
    True
    >>> linear.get_feature_names_out()
    array(['flowpca0', 'flowpca1'], dtype=object)

    Directions the data do not occupy get the floor ``alpha`` as their local variance,
    and do not count in the dimension:

    >>> P, _ = make_embedded_plane(200, random_state=0)
    >>> plane = NormalizingFlowPCA(flow="linear", alpha=1e-4).fit(P)
    >>> plane.local_variances(P[:1]).round(4)
    array([[5.2161e+00, 1.8622e+00, 1.0000e-04]])
    >>> plane.intrinsic_dimension_, plane.local_intrinsic_dimension(P[:3])
    (2, array([2, 2, 2]))

    A nonlinear flow (trained for a few epochs only here): with all components kept,
    ``inverse_transform`` brings the points back.

    >>> model = NormalizingFlowPCA(n_layers=2, max_iter=5, random_state=0).fit(X)
    >>> model.n_components_, model.n_iter_, len(model.loss_curve_)
    (3, 5, 5)
    >>> Z = model.transform(X)
    >>> np.allclose(model.inverse_transform(Z[:5]), X[:5], atol=1e-6)
    True
    >>> directions = model.local_directions(X[:4])  # unit columns, like Z's components
    >>> directions.shape, np.allclose(np.linalg.norm(directions, axis=1), 1.0)
    ((4, 3, 3), True)
    >>> np.array_equal(model.sample(4, random_state=1), model.sample(4, random_state=1))
    True

    An injective flow learns a manifold of dimension ``n_components``; its samples lie on
    it:

    >>> curve = NormalizingFlowPCA(2, flow="injective", n_layers=2, max_iter=5,
    ...                            random_state=0).fit(X)
    >>> bool(np.allclose(curve.off_manifold_distance(curve.sample(5, random_state=0)), 0,
    ...                  atol=1e-6))
    True
    """

    # return_residuals is an output option, not metadata: no set_inverse_transform_request.
    __metadata_request__inverse_transform = {"return_residuals": metadata_routing.UNUSED}

    _parameter_constraints = {
        "n_components": [Interval(Integral, 1, None, closed="left"),
                         Interval(RealNotInt, 0, 1, closed="neither"),
                         StrOptions({"auto"}), None],
        "flow": [StrOptions(set(family_names())), Flow, torch.nn.Module],
        "flow_params": [dict, None],
        "n_layers": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "activation": [StrOptions({"asinh", "leaky_softplus"})],
        "penalty_estimator": [StrOptions({"auto", "exact", "hutchinson"})],
        "alpha": [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})],
        "svd_solver": [StrOptions({"auto", "full", "randomized"})],
        "component_map": [StrOptions({"auto", "projected", "integrated"})],
        "inverse_tol": [Interval(Real, 0, None, closed="neither")],
        "inverse_max_iter": [Interval(Integral, 1, None, closed="left")],
        "solver": [StrOptions({"auto", "exact", "adam"})],
        "max_iter": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither"),
                               StrOptions({"auto"})],
        "learning_rate": [StrOptions({"auto", "adaptive", "constant", "cosine"})],
        "tol": [Interval(Real, 0, None, closed="left")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"),
                             StrOptions({"auto"})],
        "early_stopping": ["boolean", StrOptions({"auto"})],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "device": [str, torch.device],
        "dtype": [StrOptions({"auto", "float64", "float32"})],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "intrinsic_dimension_threshold": [StrOptions({"gap"}),
                                          Interval(Real, 1, None, closed="neither")],
    }

    def __init__(self, n_components=None, *, flow="nsf", alpha="auto", n_layers="auto",
                 activation="asinh", flow_params=None, penalty_estimator="auto",
                 svd_solver="auto", component_map="auto", inverse_tol=1e-8,
                 inverse_max_iter=100, solver="auto",
                 max_iter="auto", batch_size="auto", learning_rate_init="auto",
                 learning_rate="auto", tol=1e-4, n_iter_no_change="auto",
                 early_stopping="auto", validation_fraction=0.1, device="auto",
                 dtype="auto", random_state=None, verbose=0,
                 intrinsic_dimension_threshold="gap"):
        self.n_components = n_components
        self.flow = flow
        self.alpha = alpha
        self.n_layers = n_layers
        self.activation = activation
        self.flow_params = flow_params
        self.penalty_estimator = penalty_estimator
        self.svd_solver = svd_solver
        self.component_map = component_map
        self.inverse_tol = inverse_tol
        self.inverse_max_iter = inverse_max_iter
        self.solver = solver
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.learning_rate = learning_rate
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self.intrinsic_dimension_threshold = intrinsic_dimension_threshold

    # ------------------------------------------------------------------ fitting
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the flow to ``X`` by penalized maximum likelihood.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : None
            Ignored.

        Returns
        -------
        self : NormalizingFlowPCA
            The fitted estimator.

        """
        previous_state = self.__dict__.copy()
        try:
            self._fit(X)
        except BaseException:
            # A failed fit leaves a previously fitted estimator exactly as it was.
            self.__dict__.clear()
            self.__dict__.update(previous_state)
            raise
        return self

    def _fit(self, X):
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2)
        X = X.astype(np.float64, copy=False)
        n_samples, n_features = X.shape
        if isinstance(self.n_components, Integral) and self.n_components > n_features:
            raise ValueError(f"n_components={self.n_components} must be between 1 and "
                             f"n_features={n_features}.")
        if self.flow_params is not None and not isinstance(self.flow, str):
            raise ValueError("flow_params applies to a flow family given by name, not to "
                             "a Flow instance; configure the instance instead.")
        solver = resolve_solver(self.flow, self.solver)
        device = _device.resolve_device(self.device)
        dtype = _device.resolve_dtype(self.dtype, device)
        random_state = check_random_state(self.random_state)
        settings = resolve_settings(
            self.flow, {name: getattr(self, name) for name in AUTO_PARAMETERS}, n_samples,
            n_features, solver, self.validation_fraction)

        # The density.
        mean, Xc = density.center(X, dtype)
        exact = None
        if solver == "exact":
            if self.flow_params:
                FlowSettings(settings["alpha"], 0, flow_params=self.flow_params).params(
                    "linear", {})
            flow, exact = density.fit_linear(Xc, settings["alpha"], dtype)
            flow = flow.to(device, dtype)
            fitted, x_train, x_val = {"n_iter_": 1}, Xc, None  # one closed-form step
        else:
            flow, fitted, (x_train, x_val) = self._fit_gradient(Xc, device, dtype,
                                                                random_state, settings)
        density.check_finite_scores(flow, Xc)
        alpha = settings["alpha"]

        # The components, by the map the flow's traits choose.
        component_map = make_component_map(flow, self.component_map, self.svd_solver, exact)
        variances, typical = component_map.mean_variances(flow, Xc, random_state)
        dimension = flow.n_components if flow.is_injective else \
            intrinsic_dimension(typical, alpha, self.intrinsic_dimension_threshold)
        ratio = variances / variances.sum()
        n_components = flow.n_components if flow.is_injective else \
            _resolve_n_components(self.n_components, ratio, n_features, dimension)
        component_map.fit(flow, Xc, n_components, random_state)

        for name in _SOLVER_ATTRIBUTES + ("components_",):
            self.__dict__.pop(name, None)  # left over from a fit with another solver/flow
        fitted.update({f"{name}_": settings[name] for name in AUTO_PARAMETERS},
                      **component_map.fitted_attributes())
        fitted.update(
            mean_=mean, flow_=flow.requires_grad_(False).eval(), n_components_=n_components,
            explained_variance_=variances[:n_components],
            explained_variance_ratio_=ratio[:n_components],
            typical_local_variances_=typical, intrinsic_dimension_=dimension,
            _component_map=component_map)
        for name, value in fitted.items():
            setattr(self, name, value)
        self._set_baseline_gains(x_train, x_val)

    def _fit_gradient(self, Xc, device, dtype, random_state, settings):
        """Gradient training with the resolved ``settings`` (``settings['alpha']`` is set
        to the chosen value); returns the flow (in ``dtype``, whatever dtype it trained
        in), the solver's fitted attributes and the split ``(x_train, x_val)``."""
        alpha = settings["alpha"]
        if alpha == 0 and isinstance(self.flow, str) and (
                self.flow == "realnvp" or self.flow == "mlp"
                and (self.flow_params or {}).get("lipschitz") is None):
            # MLP and RealNVP start from the whitening (Sigma + alpha I)^-1/2 (from_data).
            density.check_nonsingular(np.linalg.eigvalsh(Xc.T @ Xc / Xc.shape[0]), dtype,
                                      alpha)
        density.check_variance_range(Xc, dtype, alpha)
        generator = _device.make_generator(_device.seed_from(random_state), device)
        x_train, x_val = Xc, None
        if settings["early_stopping"]:
            x_train, x_val = density.split_validation(
                Xc, n_validation(self.validation_fraction, Xc.shape[0]), random_state)
        # Train in the family's dtype where the model's was left to 'auto' on the CPU
        # (zuko's flows: float32, as the plain zuko loop they were measured against);
        # the fitted flow is cast back.
        train_dtype = dtype
        if (settings["training_dtype"] is not None and self.dtype == "auto"
                and device.type == "cpu"):
            train_dtype = getattr(torch, settings["training_dtype"])
        alphas = [alpha]
        if not isinstance(alpha, Real):  # ('validation', grid): fine-tune on each value
            scale = float(np.mean(np.var(x_train, axis=0)))
            alphas = [float(value) * scale for value in alpha[1]]
        flow = density.make_flow(
            self.flow, x_train, device, train_dtype, generator, floor=max(alphas),
            n_layers=settings["n_layers"], activation=self.activation,
            flow_params=self.flow_params, n_components=self._latent_dimension(x_train))
        options = density.TrainingOptions(
            alpha=alphas[0], penalty=settings["penalty_estimator"],
            max_iter=settings["max_iter"], batch_size=settings["batch_size"],
            learning_rate_init=settings["learning_rate_init"],
            learning_rate=settings["learning_rate"], tol=self.tol,
            n_iter_no_change=settings["n_iter_no_change"],
            max_grad_norm=settings["max_grad_norm"], verbose=self.verbose)
        flow, result, chosen, alpha_scores = density.train(flow, x_train, x_val, options,
                                                           alphas, generator)
        flow = flow.to(device, dtype)
        settings["alpha"] = chosen
        if chosen == 0 and not flow.is_injective and (
                flow.is_linear or not result.converged):  # a converged fit has settled
            density.warn_if_unbounded(flow, Xc, result.converged)
        return flow, {
            "loss_curve_": result.loss_curve, "n_iter_": result.n_iter,
            "validation_scores_": result.validation_scores if x_val is not None else None,
            "alpha_scores_": alpha_scores}, (x_train, x_val)

    def _set_baseline_gains(self, x_train, x_val):
        """``gaussian_baseline_score_`` and the gains over it (see
        :mod:`flowpca.density`), on the centered training and held-out data."""
        # An injective flow's score is a density on its d-dimensional manifold: its
        # baseline is the Gaussian on the d leading principal axes.
        baseline = density.GaussianBaseline(
            x_train, self.alpha_, self.n_components_ if self.flow_.is_injective else None)
        self.gaussian_baseline_score_ = baseline.training_score()
        with np.errstate(invalid="ignore"):  # inf - inf: both unbounded
            self.gaussian_baseline_gain_ = float(
                np.mean(density.score_samples(self.flow_, x_train))
                - self.gaussian_baseline_score_)
            self.validation_gaussian_baseline_gain_ = None if x_val is None else float(
                np.mean(density.score_samples(self.flow_, x_val))
                - np.mean(baseline.score_samples(x_val)))

    def _latent_dimension(self, Xc):
        """The latent dimension ``d`` of ``flow='injective'`` (None for other families):
        ``n_components`` as an int, all features for None, and for 'auto' the
        ``intrinsic_dimension_`` of a preliminary full-dimensional ('mlp') fit with the
        same settings."""
        if self.flow != "injective":
            return None
        if self.n_components is None or isinstance(self.n_components, Integral):
            return self.n_components
        if isinstance(self.n_components, str):  # 'auto'
            preliminary = clone(self).set_params(flow="mlp", flow_params=None)
            return max(1, preliminary.fit(Xc).intrinsic_dimension_)
        raise ValueError(f"flow='injective' needs an int n_components (the latent "
                         f"dimension), 'auto' or None; got {self.n_components!r}.")

    def _validate_centered(self, X):
        """Validated ``X``, centered lazily chunk by chunk (no centered copy of X)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return LazilyCentered(X, self.mean_)

    def _check_components(self, X):
        check_is_fitted(self)
        X = check_array(X, dtype=[np.float64, np.float32]).astype(np.float64, copy=False)
        if X.shape[1] != self.n_components_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} "
                             f"expects {self.n_components_} components as input.")
        return X

    # ------------------------------------------------------------------ public API
    def transform(self, X):
        """Project ``X`` on its local principal components (un-whitened).

        Each point's components are ``S^-1 U^T f(x - mean_)`` from the SVD
        ``J_f(x) = U S V^T`` of the flow's Jacobian at that point, ordered by local
        variance, largest first (``component_map='projected'``), or the coordinates
        whose gradient is ``V^T`` (``'integrated'``, the default for zuko's flows). For
        the linear flow both equal ``(X - mean_) @ components_.T``, PCA's transform.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data to project, with the features seen in :meth:`fit`.

        Returns
        -------
        X_new : ndarray of shape (n_samples, `n_components_`)
            The un-whitened local components, largest local variance first.

        """
        Xc = self._validate_centered(X)
        return self._component_map.transform(self.flow_, Xc)

    def inverse_transform(self, X, *, return_residuals=False):
        """Map components back to data space.

        Returns the point whose components are ``X``, with missing trailing components
        taken as zero, as in PCA. For the linear flow this is ``X @ components_ + mean_``,
        PCA's inverse transform. For nonlinear flows the equation
        ``transform(x) = X`` is solved per point, from the reference point whose components
        are nearest ``X``, by a quasi-Newton iteration (one evaluation of the components
        per step) and, for up to 16 features, Levenberg-Marquardt for the points it
        leaves (see :mod:`flowpca.components._inverse`). With all components given, a point left
        unconverged starts again from the next nearest reference points (up to 8 more; 1
        above 16 features). Points that do not converge to ``inverse_tol`` within
        ``inverse_max_iter`` iterations are reported in a
        :class:`~sklearn.exceptions.ConvergenceWarning` with the worst residual.

        Where the component map is not one to one (two points share their components,
        e.g. the projected components near the turns of an S-curve), the rule is: the
        preimage returned is the one the solver reaches from the reference point whose
        components are nearest ``X`` (the chart of that reference point). With all
        components given and up to 16 features, every solution is checked for another
        preimage by one more solve from a distant reference point of similar
        components; points that have one are counted in a
        :class:`~flowpca.exceptions.AmbiguousInverseWarning`.

        Parameters
        ----------
        X : array-like of shape (n_samples, `n_components_`)
            Components, as returned by :meth:`transform`.
        return_residuals : bool, default=False
            Also return each point's residual: the norm of ``transform(x) - X``
            (trailing components zero-filled), in component units; 0 for the linear and
            injective flows, whose inverse is exact.

        Returns
        -------
        X_original : ndarray of shape (n_samples, n_features)
            Points in data space.
        residuals : ndarray of shape (n_samples,)
            Only with ``return_residuals``.

        """
        X = self._check_components(X)
        X_original, residuals = self._component_map.inverse(
            self.flow_, X, self.inverse_tol, self.inverse_max_iter)
        X_original = X_original + self.mean_
        return (X_original, residuals) if return_residuals else X_original

    def local_variances(self, X):
        """Local variances of the fitted density at each point, largest first.

        ``s_i(x)^-2`` for the singular values of the flow's Jacobian at ``x``: the
        variances of the local Gaussian approximation. Directions the data do not occupy
        get about ``alpha`` (the floor). For the linear flow, PCA's variances (times
        ``(n - 1) / n``, plus ``alpha``) at every point.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points at which to evaluate the local variances.

        Returns
        -------
        variances : ndarray of shape (n_samples, n_features)
            Each row sorted in decreasing order.

        """
        Xc = self._validate_centered(X)
        return self._component_map.local_variances(self.flow_, Xc)

    def local_intrinsic_dimension(self, X):
        """Dimension of the data's manifold at each point, as the flow sees it.

        The rule of ``intrinsic_dimension_threshold`` (see ``intrinsic_dimension_``)
        applied to each point's own :meth:`local_variances` rather than to their
        geometric mean over the training data: for data made of pieces of different
        dimensions (a curve through a sheet, say). An injective flow's answer is its
        latent dimension everywhere.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        dimensions : ndarray of shape (n_samples,), dtype int

        """
        Xc = self._validate_centered(X)
        return self._component_map.local_intrinsic_dimension(
            self.flow_, Xc, self.alpha_, self.intrinsic_dimension_threshold)

    def local_directions(self, X):
        """Local principal directions at each point, in input space.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points at which to evaluate the local directions.

        Returns
        -------
        directions : ndarray of shape (n_samples, n_features, `n_components_`)
            Unit columns ``v_i(x)`` ordered like :meth:`transform`'s components and with
            the same signs. For the linear flow, ``components_.T`` at every point.

        """
        Xc = self._validate_centered(X)
        return self._component_map.directions(self.flow_, Xc)

    def local_covariance(self, X):
        """Covariance of the local Gaussian approximation, ``J^-1 J^-T``, at each point.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points at which to evaluate the local covariance.

        Returns
        -------
        covariance : ndarray of shape (n_samples, n_features, n_features)
            For the linear flow, PCA's covariance (times ``(n - 1) / n``) plus
            ``alpha I`` at every point.

        """
        Xc = self._validate_centered(X)
        return self._component_map.local_covariance(self.flow_, Xc)

    def score_samples(self, X):
        """Log-likelihood of each sample under the fitted model, in nats.

        This is the full ``n_features``-dimensional density, whatever ``n_components`` is:
        ``log p(x) = -||f(x - mean_)||^2 / 2 - D/2 log(2 pi) + log|det J_f(x - mean_)|``.
        For ``flow='injective'`` it is instead the density *on the learned manifold* of
        the projection of ``x``, ``log p_z(z) - 1/2 log det(J_g^T J_g)`` at
        ``z = transform(x)`` (with respect to the manifold's ``d``-dimensional volume; not
        comparable with full-dimensional densities); how far ``x`` lies from the manifold
        is :meth:`off_manifold_distance`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples, with the features seen in :meth:`fit`.

        Returns
        -------
        log_likelihood : ndarray of shape (n_samples,)
            ``log p(x)`` of each sample.

        """
        Xc = self._validate_centered(X)
        return density.score_samples(self.flow_, Xc)

    def off_manifold_distance(self, X):
        """Distance of each sample to the learned manifold (``flow='injective'`` only).

        ``||x - inverse_transform(transform(x))||``: 0 on the manifold, so it tells how
        well the manifold fits (a diagnostic next to :meth:`score_samples`, which scores
        only the projection).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        distance : ndarray of shape (n_samples,)
            Euclidean distance, in the units of ``X``.

        """
        Xc = self._validate_centered(X)
        return self._component_map.off_manifold_distance(self.flow_, Xc)

    def score(self, X, y=None):
        """Mean log-likelihood of the samples (higher is better), for model selection.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples, e.g. held-out data.
        y : None
            Ignored.

        Returns
        -------
        score : float
            Mean of :meth:`score_samples` over ``X``, in nats.

        """
        return float(np.mean(self.score_samples(X)))

    def sample(self, n_samples=1, random_state=None):
        """Draw samples from the fitted density: ``mean_ + f^-1(z)``, ``z ~ N(0, I)``.

        Parameters
        ----------
        n_samples : int, default=1
            Number of samples.
        random_state : int, RandomState instance or None, default=None
            Seed for the draws; None uses the estimator's ``random_state``.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
            The samples, in data space.

        """
        check_is_fitted(self)
        if not isinstance(n_samples, Integral) or n_samples < 1:
            raise ValueError(f"Invalid value for 'n_samples': {n_samples!r}. The sampling "
                             "requires at least one sample.")
        rng = check_random_state(self.random_state if random_state is None else random_state)
        device, _ = flow_device_dtype(self.flow_)
        generator = _device.make_generator(_device.seed_from(rng), device)
        return density.sample(self.flow_, n_samples, generator) + self.mean_

    def get_feature_names_out(self, input_features=None):
        """Output feature names: ``flowpca0``, ``flowpca1``, ...

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Only checked against the names seen in fit.

        Returns
        -------
        feature_names_out : ndarray of str objects
            One name per component.

        """
        check_is_fitted(self)
        _check_feature_names_in(self, input_features)
        return np.asarray([f"flowpca{i}" for i in range(self.n_components_)], dtype=object)

    # ------------------------------------------------------------------ persistence
    def __getstate__(self):
        # No torch object in the state (see flowpca._persistence).
        return _persistence.estimator_to_state(dict(super().__getstate__()), __version__)

    def __setstate__(self, state):
        super().__setstate__(_persistence.estimator_from_state(
            state, type(self).__name__, __version__))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags
