"""NormalizingFlowPCA: principal components and a density from a normalizing flow."""

import copy
import dataclasses
from contextlib import nullcontext as _nullcontext
import math
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.linalg
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context, clone
from sklearn.utils import check_array, check_random_state, metadata_routing
from sklearn.utils._param_validation import Interval, RealNotInt, StrOptions
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data

from . import _device, _integration, _inverse, _jacobian, _orientation, _persistence
from ._diagnostics import gaussian_baseline, intrinsic_dimension
from ._objective import log_likelihood
from ._training import TrainingOptions, train_flow
from ._version import __version__
from .exceptions import AmbiguousInverseWarning, DegenerateFitWarning
from .flows import Flow, LinearFlow
from .flows._families import (AUTO_PARAMETERS, FAMILY_DEFAULTS, INSTANCE_DEFAULTS,
                              FlowSettings, build_flow, family_names, resolve_defaults)

# Fitted attributes that only gradient-trained models have.
_SOLVER_ATTRIBUTES = ("loss_curve_", "n_iter_", "validation_scores_", "alpha_scores_")

# alpha='auto' by held-out likelihood (zuko's families): every grid value after the first
# fine-tunes a copy of the fitted flow for this fraction of its epochs (at least
# _ALPHA_FINE_TUNE_MIN_EPOCHS), from this fraction of its initial learning rate.
_ALPHA_FINE_TUNE_FRACTION = 0.05
_ALPHA_FINE_TUNE_MIN_EPOCHS = 5
_ALPHA_FINE_TUNE_LEARNING_RATE = 0.1

# Largest dimension for which inverse_transform retries the points the quasi-Newton stage
# leaves unconverged by Levenberg-Marquardt with a finite-difference Jacobian (2 D
# component evaluations per iteration). Measured (MLP flows): at D = 3 it rescues 44 of
# the 47 S-curve points left of 300; at D = 64 (digits) it rescued none of 7 and cost
# 8-50 s per point.
_LM_MAX_FEATURES = 16
# With all components given, inverse_transform restarts an unconverged point from this many
# further reference points (one for more than _LM_MAX_FEATURES features, where every solve
# costs more).
_INVERSE_RESTARTS = 8

# Median ratio of the smallest local variance to the global variance in that direction
# below which an unconverged alpha=0 fit is reported as collapsing.
_COLLAPSE_RATIO = 1e-3

# Mean local variances (explained_variance_, intrinsic_dimension_) of a nonlinear flow:
# over at most this many training points, drawn at random (one Jacobian SVD each; their
# standard error is well below the 100x threshold that separates components from the
# floor).
_MAX_VARIANCE_POINTS = 1000

# Reference field for component signs: at most this many training points, and at most
# this many stored floats (points x components x features).
_MAX_REFERENCE_POINTS = 1000
_REFERENCE_FLOATS = 20_000_000

# svd_solver='auto' goes matrix-free from this many features when at most
# 1/_RANDOMIZED_MIN_RATIO of them are needed. Measured (1 thread, 8 layers, k=7):
# full/randomized time 0.4 at D=64, 0.8 at D=256, 1.5 at D=784.
_RANDOMIZED_MIN_FEATURES = 512
_RANDOMIZED_MIN_RATIO = 16

# inverse_transform (all components given, at most _LM_MAX_FEATURES features) checks each
# solution for a second preimage: one more solve from the reference point farthest (in data
# space) from the solution among this many nearest the target in component space. Two
# solutions count as distinct beyond this distance relative to the data's scale.
_PREIMAGE_CHECK_STARTS = 4
_PREIMAGE_RTOL = 1e-4

# Redraw rounds for samples whose inverse overflows.
_MAX_REDRAWS = 100

# Relative size below which a covariance eigenvalue counts as zero.
_SINGULAR_RTOL = 1e-12

# Working memory per row and feature of a forward pass with the log-determinant (and of
# the inverse), for chunking by scikit-learn's working_memory: measured 12 float64
# temporaries of shape (rows, features) for the MLP flow, whatever its depth; 16 for margin.
_FORWARD_BYTES_PER_FEATURE = 16 * 8


def _flip_rows(Vt):
    """PCA's sign rule (``svd_flip(..., u_based_decision=False)``): in each row the entry
    of largest magnitude is positive."""
    largest = np.argmax(np.abs(Vt), axis=1)
    signs = np.sign(Vt[np.arange(Vt.shape[0]), largest])
    signs[signs == 0] = 1.0
    return Vt * signs[:, None]


def _exact_linear_solution(Xc, alpha):
    """Eigendecomposition of ``Sigma_hat + alpha I`` via the SVD of the centered data.

    Returns the variances (descending) and the orthonormal directions (rows, PCA signs).
    """
    n_samples, n_features = Xc.shape
    _, s, Vt = scipy.linalg.svd(Xc, full_matrices=False)
    variances = s**2 / n_samples
    if Vt.shape[0] < n_features:
        complement = scipy.linalg.null_space(Vt).T
        Vt = np.vstack([Vt, complement])
        variances = np.concatenate([variances, np.zeros(complement.shape[0])])
    return variances + alpha, _flip_rows(Vt)


def _n_components_from_ratio(ratio, fraction):
    """Smallest number of components whose cumulative ratio exceeds ``fraction`` (PCA's
    rule)."""
    cumulative = np.cumsum(ratio)
    return int(min(np.searchsorted(cumulative, fraction, side="right") + 1, ratio.size))


def _center(X, dtype):
    """The mean of ``X`` and ``X - mean``; a ValueError when a model in ``dtype`` cannot
    represent the data's second moments: the sum of all ``(X - mean)**2`` must stay below
    the largest float by a factor ``1/eps``, the headroom that the flow's own products
    (local variances ``s**-2``, their sums) need."""
    n_samples, n_features = X.shape
    with np.errstate(over="ignore", invalid="ignore"):
        mean = X.mean(axis=0)
        # One correction pass (the corrected two-pass algorithm): the rounding error of
        # the mean no longer shows up as spread, e.g. constant features center to 0.
        mean = mean + (X - mean).mean(axis=0)
        Xc = X - mean
        largest = float(np.max(np.abs(Xc))) if Xc.size else 0.0
    finfo = torch.finfo(dtype)
    limit = math.sqrt(finfo.max * finfo.eps / (n_samples * n_features))
    if not (np.isfinite(mean).all() and largest <= limit):  # False for NaN too
        raise ValueError(
            f"The values of X are too large for a {str(dtype).replace('torch.', '')} "
            f"model: sums of squared deviations from the mean would overflow (largest "
            f"|X - mean| = {largest:.3g}; at most {limit:.3g} for {n_samples} x "
            f"{n_features} data). Rescale X, e.g. with sklearn.preprocessing.StandardScaler.")
    return mean, Xc


class _LazilyCentered:
    """``X - mean`` row block by row block, so that inference never holds a centered
    copy of the whole input."""

    def __init__(self, X, mean):
        self.X, self.mean = X, mean
        self.shape = X.shape

    def __getitem__(self, rows):
        return self.X[rows].astype(np.float64, copy=False) - self.mean


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
        The default, 'nsf', had the best held-out likelihood of the families at equal CPU
        time on two moons and, with 'maf', on the paper's sine
        (``benchmarks/results/defaults.md``); its integrated components recover the paper's
        S-curve factors (absolute Spearman correlation >= 0.99). 'mlp' is the paper's
        model.
        'injective' is a rectangular flow ``x = mean_ + g(z)`` from an
        ``n_components``-dimensional latent (:class:`flowpca.flows.InjectiveFlow`; for
        ``n_components='auto'``, ``d`` is the ``intrinsic_dimension_`` of a preliminary
        'mlp' fit): :meth:`transform` returns the latent ``z``, :meth:`inverse_transform`
        the point ``g(z)`` on the manifold, :meth:`sample` draws on the manifold,
        :meth:`score_samples` is the density on the manifold (see there) and
        ``explained_variance_`` the variances of the latent coordinates; ``alpha`` and
        ``flow_params`` (``latent_layers``, ``noise_variance``, ``volume``, ``n_probes``)
        as in :func:`flowpca.flows.injective.build_injective`.
        The flow family: 'mlp' is the paper's invertible MLP (``n_layers`` blocks of a full
        affine map and an invertible elementwise nonlinearity, then an affine map);
        'linear' is ``f(x) = W x``, i.e. PCA; 'realnvp' is RealNVP (the paper's
        comparator: an affine map started at the data's whitening, then ``n_layers``
        affine coupling layers with alternating masks and ReLU conditioners, see
        :class:`flowpca.flows.RealNVPFlow`); 'nsf' is zuko's neural spline flow
        (``n_layers`` rational-quadratic spline couplings) and 'maf' its masked
        autoregressive flow (``n_layers`` affine autoregressive layers), both after a
        fixed standardization (see :class:`flowpca.flows.NSFFlow`). A
        :class:`flowpca.flows.Flow` instance is used as
        the initial flow (it is copied, never modified); an unconditional
        ``zuko.flows.Flow`` (or lazy transform) is copied and wrapped in
        :class:`flowpca.flows.ZukoFlow`, standardized on the training data.
        'residual' is an invertible residual flow (``n_layers`` blocks ``h + g(h)`` with
        ``Lip(g) < 1``, :class:`flowpca.flows.ResidualFlow`) and 'implicit' an implicit
        flow (``n_layers`` blocks ``x + g_x(x) = z + g_z(z)``,
        :class:`flowpca.flows.ImplicitFlow`), both after an affine map started at the
        data's whitening.
    alpha : float or 'auto', default='auto'
        Weight of the Tikhonov penalty on the flow's Jacobian. It has units of variance:
        for the linear flow, the fitted covariance is ``Sigma + alpha I``, so ``alpha`` is
        a floor on every local variance. 'auto': for 'nsf' and 'maf' (and wrapped zuko
        flows) the value of best held-out likelihood among ``0`` and ``1e-3`` times the
        mean feature variance, inside one fit: the flow is trained with ``alpha=0`` (no
        penalty, the cheapest step) and a copy is fine-tuned with the other value for 5 %
        of the epochs (the scores are in ``alpha_scores_``; without early stopping the
        first value is kept); measured on four 2 000-point sets (banana, two moons, the
        paper's sine and S-curve), the penalty lowered the held-out likelihood of the spline
        flow on each, so it is kept only where it helps.
        For the other families 'auto' is the paper's ``5e-5``. The value used is
        ``alpha_``. ``GridSearchCV`` over explicit values works as well (the estimator's
        :meth:`score` is the held-out log-likelihood).
    n_layers : int or 'auto', default='auto'
        The family's depth: hidden blocks of 'mlp' (the paper's 8), coupling layers of
        'realnvp' (the paper's comparator: 6) and 'nsf', autoregressive layers of 'maf'
        (3 for both: 5 gained 0.005 to 0.02 nats on two moons and the banana at 1.8 times
        the time), blocks of 'residual' and 'implicit' (8), body blocks of 'injective'
        (4: the paper's 8 left its samples farther off the manifold). 'auto' takes the
        value in parentheses (``n_layers_``).
    activation : {'asinh', 'leaky_softplus'}, default='asinh'
        Invertible nonlinearity of the 'mlp' flow: ``asinh`` (the paper's) or
        ``0.1 u + 0.9 softplus(u)``.
    flow_params : dict, default=None
        Further keyword arguments of the flow family named by ``flow`` (its architecture
        beyond ``n_layers``), checked when fitting: an unknown key raises ``ValueError``
        listing the accepted ones. 'mlp' accepts ``noise_scale`` (0.01) and
        ``hidden_scale`` (1.0) of its initialization (see
        :meth:`flowpca.flows.MLPFlow.from_data`) and ``lipschitz`` (None; a float ``L > 1``
        bounds every layer's singular values to ``[1/L, L]``, which keeps ``alpha=0``
        fits finite, see :class:`flowpca.flows.BiLipschitzMLPFlow`); 'linear' accepts none;
        'nsf' accepts ``hidden_features`` ((64, 64), the conditioner's hidden sizes) and
        ``bins`` (8, spline bins); 'maf' accepts ``hidden_features`` ((64, 64)); 'realnvp' accepts
        ``hidden_features`` ((64, 64), the conditioners' hidden ReLU widths; the paper
        used (512, 512), about ten times slower per epoch) and ``scale_clamp`` (3.0, the
        bound ``c`` on each coupling's log-scales ``c tanh(s / c)``); 'residual' and
        'implicit' accept ``hidden_sizes`` ((32, 32), each ``g``'s hidden widths),
        ``lipschitz`` (0.9, the spectral-norm bound ``c`` in (0, 1) of every layer),
        ``n_power_iterations`` (1), ``activation`` ('lipswish' or 'elu'),
        ``exact_logdet_max_features`` (10; exact log-det while training up to this many
        features, unbiased power-series estimate above), ``eval_exact_logdet_max_features``
        (512; the same for scoring), ``n_exact_terms`` (2) and ``geometric_p`` (0.5) of
        the estimator, ``inverse_tol`` (1e-10) and ``inverse_max_iter`` (500) of the
        block inversions (and of the implicit flow's root finding), and ``output_scale``
        (0.1) of the initialization (see :func:`flowpca.flows.residual.build_residual`).
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
        (see :mod:`flowpca._integration`): it follows the local directions wherever the
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
        optimizer steps, within 50 to 250 epochs (250 at 2 000 points: 8 to 15 CPU
        seconds on one thread in 2-D and 3-D); 1000 for 'injective'; for the others the
        paper's model's 2000, chosen with its ``learning_rate_init`` and
        ``n_iter_no_change`` on the paper's S-curve
        (2 000 points, 8 layers; ``benchmarks/results/s_curve_tuning.md``: the curled
        ends of the curve resolve only late, typically after 1 000 to 2 000 epochs).
    batch_size : int or 'auto', default='auto'
        Mini-batch size for 'adam' (capped at the number of samples). 'auto': for 'nsf'
        and 'maf' a quarter of the training rows within 64 to 512 (4 steps per epoch up
        to 2 048 rows); 100 for 'injective'; 200 for the others.
    learning_rate_init : float or 'auto', default='auto'
        Initial (for 'cosine': peak) Adam step size. 'auto': 1e-2 for 'nsf' and 'maf'
        (against 5e-3, seeds 0-2: better on two moons and the paper's S-curve and sine,
        as good on the banana and noisy S-curve) and 'injective', 3e-2 for the others
        (on the paper's S-curve 3e-2 with the adaptive schedule resolved the ends of the
        curve where 1e-2 did not).
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
        50 for 'nsf' and 'maf' (measured on 10 data sets x 3 seeds: the same weights as
        100 on 29 of the 30 fits, 0.009 validation nats lower on one; 30 lost up to
        0.08 nats), 40 for the others.
    early_stopping : bool or 'auto', default='auto'
        Hold out ``validation_fraction`` of the data, follow its log-likelihood for
        convergence, and keep the weights that scored best on it. 'auto' is True for
        'nsf' and 'maf' and False for the others (the paper's model trains on all the
        data).
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
        :func:`flowpca._diagnostics.intrinsic_dimension`). 'gap': scale-free, the
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
    >>> import numpy as np
    >>> from flowpca import NormalizingFlowPCA
    >>> X = np.random.RandomState(0).normal(size=(100, 3)) * [3.0, 1.0, 0.1]
    >>> model = NormalizingFlowPCA(n_components=2, flow="linear").fit(X)
    >>> model.transform(X).shape
    (100, 2)
    >>> model.explained_variance_.round(1)
    array([9.5, 1. ])
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

        Examples
        --------
        >>> from flowpca import NormalizingFlowPCA
        >>> from flowpca.datasets import make_sine_wave
        >>> X, _ = make_sine_wave(200, random_state=0)
        >>> model = NormalizingFlowPCA(n_components=2, n_layers=2, max_iter=5,
        ...                            random_state=0).fit(X)
        >>> model.n_components_, model.n_iter_, len(model.loss_curve_)
        (2, 5, 5)
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
        solver = self._resolve_solver()
        device = _device.resolve_device(self.device)
        dtype = _device.resolve_dtype(self.dtype, device)
        random_state = check_random_state(self.random_state)
        settings = self._resolve_auto(n_samples, n_features, solver)
        alpha = settings["alpha"]

        mean, Xc = _center(X, dtype)
        fitted = {"n_iter_": 1}  # the closed-form solve counts as one iteration
        if solver == "exact":
            if self.flow_params:
                FlowSettings(alpha, 0, flow_params=self.flow_params).params("linear", {})
            variances, directions = _exact_linear_solution(Xc, alpha)
            self._check_nonsingular(variances, dtype, alpha)
            weight = directions / np.sqrt(variances)[:, None]
            flow = LinearFlow(n_features, torch.as_tensor(weight)).to(device, dtype)
        else:
            if alpha == 0 and isinstance(self.flow, str) and (
                    self.flow == "realnvp" or self.flow == "mlp"
                    and (self.flow_params or {}).get("lipschitz") is None):
                # MLP and RealNVP start from the whitening (Sigma + alpha I)^-1/2 (from_data).
                self._check_nonsingular(np.linalg.eigvalsh(Xc.T @ Xc / n_samples), dtype,
                                        alpha)
            self._check_variance_range(Xc, dtype, alpha)
            flow, fitted = self._train(Xc, device, dtype, random_state, settings)
            settings["alpha"] = alpha = fitted.pop("_alpha")
        x_train, x_val = fitted.pop("_split", (Xc, None))
        fitted.update({f"{name}_": settings[name] for name in AUTO_PARAMETERS})
        self._check_finite_scores(flow, Xc)
        injective = getattr(flow, "is_injective", False)
        if injective:  # the latent coordinates' variances; the manifold's dimension is d
            variances = typical = np.var(self._latent_chunks(flow, Xc), axis=0)
        elif not flow.is_linear:
            sample = Xc
            if Xc.shape[0] > _MAX_VARIANCE_POINTS:
                sample = Xc[np.sort(random_state.choice(Xc.shape[0], _MAX_VARIANCE_POINTS,
                                                        replace=False))]
            variances, typical = self._mean_local_variances(flow, sample)
        elif solver != "exact":  # the closed form's are exact, even for ill-conditioned W
            variances, directions = self._linear_decomposition(flow)
        if flow.is_linear:
            typical = variances  # the same at every point
        fitted["typical_local_variances_"] = typical
        fitted["intrinsic_dimension_"] = flow.n_components if injective else \
            intrinsic_dimension(typical, alpha, self.intrinsic_dimension_threshold)
        ratio = variances / variances.sum()
        n_components = flow.n_components if injective else self._resolve_n_components(
            ratio, n_features, fitted["intrinsic_dimension_"])
        fitted.update(
            mean_=mean, flow_=flow.requires_grad_(False).eval(), n_components_=n_components,
            explained_variance_=variances[:n_components],
            explained_variance_ratio_=ratio[:n_components],
        )
        fitted["_component_map"] = self._resolve_component_map(flow)
        if flow.is_linear:
            fitted["components_"] = directions[:n_components]
            fitted["_reference_points"] = np.zeros((1, n_features))
            fitted["_reference_directions"] = directions[None, :n_components]
        elif not injective:
            points, field, point_components = self._reference_field(
                flow, Xc, n_components, random_state)
            if fitted["_component_map"] == "integrated":
                point_components = _integration.integrate_reference_frame(
                    points, field, _orientation.reference_graph(points))
            (fitted["_reference_points"], fitted["_reference_directions"],
             fitted["_reference_point_components"]) = points, field, point_components
        for name in _SOLVER_ATTRIBUTES + ("components_", "_reference_point_components",
                                          "_reference_points", "_reference_directions"):
            self.__dict__.pop(name, None)  # left over from a fit with another solver/flow
        for name, value in fitted.items():
            setattr(self, name, value)
        self._set_baseline_gains(x_train, x_val)

    def _set_baseline_gains(self, x_train, x_val):
        """``gaussian_baseline_score_`` and the gains over it (see
        :mod:`flowpca._diagnostics`), on the centered training and held-out data."""
        # An injective flow's score is a density on its d-dimensional manifold: its
        # baseline is the Gaussian on the d leading principal axes.
        baseline = gaussian_baseline(x_train, self.alpha_, self.n_components_ if getattr(
            self.flow_, "is_injective", False) else None)
        self.gaussian_baseline_score_ = baseline.training_score()
        with np.errstate(invalid="ignore"):  # inf - inf: both unbounded
            self.gaussian_baseline_gain_ = float(
                np.mean(self._score_samples_centered(x_train))
                - self.gaussian_baseline_score_)
            self.validation_gaussian_baseline_gain_ = None if x_val is None else float(
                np.mean(self._score_samples_centered(x_val))
                - np.mean(baseline.score_samples(x_val)))

    def _reference_field(self, flow, Xc, n_components, random_state):
        """Oriented local directions on a subsample of the training data (see
        :mod:`flowpca._orientation`), and the reference points' own components (each
        point is its own nearest reference: matched and signed like its field)."""
        n_samples, n_features = Xc.shape
        budget = max(1, _REFERENCE_FLOATS // (n_components * n_features))
        m = min(n_samples, _MAX_REFERENCE_POINTS, budget)
        rows = np.sort(random_state.choice(n_samples, m, replace=False)) if m < n_samples \
            else np.arange(n_samples)
        points = Xc[rows]
        n_candidates = min(n_features, n_components + _orientation.N_EXTRA_CANDIDATES)
        method = self._svd_method(n_features, n_candidates)
        candidates, candidate_components, singular_values = [], [], []
        for x in self._iter_tensor_chunks(points, flow):
            with torch.no_grad() if method == "full" else _nullcontext():
                s, Vh, y_hat = _jacobian.top_local_components(flow, x, n_candidates, method)
            candidates.append(_device.to_numpy(Vh))
            candidate_components.append(_device.to_numpy(y_hat))
            singular_values.append(_device.to_numpy(s))
        candidates = np.concatenate(candidates)
        field = _orientation.track_reference_field(
            points, candidates, n_components,
            variances=np.concatenate(singular_values) ** -2.0)
        index, signs = _orientation.match_to_reference(torch.as_tensor(candidates),
                                                       torch.as_tensor(field))
        components = torch.as_tensor(np.concatenate(candidate_components)).gather(1, index)
        return points, field, _device.to_numpy(components * signs)

    def _resolve_component_map(self, flow):
        if flow.is_linear or getattr(flow, "is_injective", False):
            return "projected"  # both maps are PCA's; an injective flow's is its latent
        if self.component_map != "auto":
            return self.component_map
        from .flows.zuko import ZukoFlow  # imports zuko only when it is used

        return "integrated" if isinstance(flow, ZukoFlow) else "projected"

    def _svd_method(self, n_features, n_components):
        if self.svd_solver != "auto":
            return self.svd_solver
        large = (n_features >= _RANDOMIZED_MIN_FEATURES
                 and n_components * _RANDOMIZED_MIN_RATIO <= n_features)
        return "randomized" if large else "full"

    def _resolve_solver(self):
        is_linear = isinstance(self.flow, str) and self.flow == "linear" or (
            isinstance(self.flow, Flow) and self.flow.is_linear)
        if self.solver == "auto":
            return "exact" if is_linear else "adam"
        if self.solver == "exact" and not is_linear:
            raise ValueError("solver='exact' is only available for flow='linear'; use "
                             "solver='adam' or 'auto'.")
        return self.solver

    def _resolve_auto(self, n_samples, n_features, solver):
        """Every parameter of :data:`~flowpca.flows._families.AUTO_PARAMETERS` for this
        fit: the user's value, or the family's default for 'auto' (see
        :data:`~flowpca.flows._families.FAMILY_DEFAULTS`), for the number of rows the
        optimizer sees (those left by the validation split)."""
        if isinstance(self.flow, str):
            table = FAMILY_DEFAULTS[self.flow]
        else:
            table = INSTANCE_DEFAULTS["flow" if isinstance(self.flow, Flow) else "zuko"]
        given = {name: getattr(self, name) for name in AUTO_PARAMETERS}
        # The split is decided first: the sizes depend on the rows it leaves.
        early_stopping = (table["early_stopping"] if given["early_stopping"] == "auto"
                          else given["early_stopping"]) and solver != "exact"
        n_train = n_samples - self._n_validation(n_samples) if early_stopping else n_samples
        settings = resolve_defaults(table, {**given, "early_stopping": early_stopping},
                                    n_train, n_features)
        if solver == "exact" and not isinstance(settings["alpha"], Real):
            settings["alpha"] = FAMILY_DEFAULTS["linear"]["alpha"]
        return settings

    def _n_validation(self, n_samples):
        n_val = max(1, int(round(self.validation_fraction * n_samples)))
        if n_val >= n_samples:
            raise ValueError("validation_fraction leaves no training samples.")
        return n_val

    def _check_nonsingular(self, variances, dtype, alpha):
        if alpha > 0:
            return  # the floor alpha keeps every variance positive, whatever the scales
        rank = int(np.sum(variances > _SINGULAR_RTOL * variances.max()))
        if rank < variances.size:
            raise ValueError(
                f"The covariance of X is singular (rank {rank} < n_features="
                f"{variances.size}), so the maximum-likelihood flow does not exist with "
                "alpha=0. Set alpha > 0 (a variance floor) or reduce the features.")
        # The flow's Jacobian scales like variance**-1/2: its square needs the headroom.
        finfo = torch.finfo(dtype)
        smallest = 1.0 / (finfo.max * finfo.eps)
        if variances.min() < smallest:
            raise ValueError(
                f"The values of X are too small for a {str(dtype).replace('torch.', '')} "
                f"model with alpha=0: the smallest variance is {variances.min():.3g}, below "
                f"{smallest:.3g}. Rescale X (e.g. with sklearn.preprocessing.StandardScaler) "
                "or set alpha > 0 (a variance floor).")

    def _check_variance_range(self, Xc, dtype, alpha):
        """A trained flow's local variances come from the SVD of its Jacobian, which
        resolves singular values down to ``eps`` times the largest: variances (with the
        floor alpha) spanning more than ``1 / eps**2`` cannot be represented."""
        if not isinstance(alpha, Real):  # chosen by validation from a grid including 0
            return
        if alpha == 0:
            return  # singular covariances: _check_nonsingular or DegenerateFitWarning
        limit = 1.0 / torch.finfo(dtype).eps ** 2
        n_samples = Xc.shape[0]
        total = float(np.einsum("ij,ij->", Xc, Xc)) / n_samples  # >= largest variance
        if (total + alpha) / alpha <= limit:
            return
        variances = np.linalg.eigvalsh(Xc.T @ Xc / n_samples)
        largest = variances.max()
        # Eigenvalues below ~eps * largest are zero within their rounding error.
        smallest = variances.min()
        if smallest <= variances.size * np.finfo(float).eps * largest:
            smallest = 0.0
        with np.errstate(over="ignore"):
            ratio = (largest + alpha) / (smallest + alpha)
        if ratio > limit:
            raise ValueError(
                f"The variances of X span too wide a range for a "
                f"{str(dtype).replace('torch.', '')} flow trained by gradient descent: the "
                f"largest is {ratio:.3g} times the smallest (floored at alpha={alpha:g}"
                f"), more than 1/eps**2 = {limit:.3g}. Rescale X (e.g. with "
                "sklearn.preprocessing.StandardScaler), increase alpha, or use "
                "flow='linear' with the exact solver.")

    def _make_flow(self, Xc, device, dtype, generator, settings, floor):
        """The initial flow for centered ``Xc``; ``floor`` is the variance floor of the
        initializations that whiten or standardize the data."""
        if not isinstance(self.flow, (str, Flow)):  # a zuko flow, wrapped on a copy
            from .flows.zuko import ZukoFlow

            flow = ZukoFlow(copy.deepcopy(self.flow)).to(device, dtype)
            if flow.n_features != Xc.shape[1]:
                raise ValueError(f"The flow acts on {flow.n_features} features but X "
                                 f"has {Xc.shape[1]} features.")
            return flow.standardize_for(_device.to_tensor(Xc, device, dtype), floor)
        if isinstance(self.flow, Flow):
            if self.flow.n_features != Xc.shape[1]:
                raise ValueError(f"The flow acts on {self.flow.n_features} features but X "
                                 f"has {Xc.shape[1]} features.")
            return copy.deepcopy(self.flow).to(device, dtype)
        flow_settings = FlowSettings(alpha=floor, n_layers=settings["n_layers"],
                                     activation=self.activation,
                                     flow_params=dict(self.flow_params or {}),
                                     generator=generator,
                                     n_components=self._latent_dimension(Xc))
        return build_flow(self.flow, _device.to_tensor(Xc, device, dtype), flow_settings)

    def _train(self, Xc, device, dtype, random_state, settings):
        """Gradient training with the resolved ``settings``; returns the flow (in
        ``dtype``, whatever dtype it trained in) and the solver's fitted attributes, with
        the chosen ``alpha`` under ``'_alpha'`` and the split under ``'_split'``."""
        generator = _device.make_generator(_device.seed_from(random_state), device)
        x_train, x_val = Xc, None
        if settings["early_stopping"]:
            n_val = self._n_validation(Xc.shape[0])
            order = random_state.permutation(Xc.shape[0])
            x_val, x_train = Xc[order[:n_val]], Xc[order[n_val:]]
        # Train in the family's dtype where the model's was left to 'auto' on the CPU
        # (zuko's flows: float32, as the plain zuko loop they were measured against);
        # the fitted flow is cast back.
        train_dtype = dtype
        if (settings["training_dtype"] is not None and self.dtype == "auto"
                and device.type == "cpu"):
            train_dtype = getattr(torch, settings["training_dtype"])
        alpha = settings["alpha"]
        alphas = [alpha]
        if not isinstance(alpha, Real):  # ('validation', grid): fine-tune on each value
            scale = float(np.mean(np.var(x_train, axis=0)))
            alphas = [float(value) * scale for value in alpha[1]]
        flow = self._make_flow(x_train, device, train_dtype, generator, settings,
                               floor=max(alphas))
        options = TrainingOptions(
            alpha=alphas[0], penalty=settings["penalty_estimator"],
            max_iter=settings["max_iter"], batch_size=settings["batch_size"],
            learning_rate_init=settings["learning_rate_init"],
            learning_rate=settings["learning_rate"], tol=self.tol,
            n_iter_no_change=settings["n_iter_no_change"],
            max_grad_norm=settings["max_grad_norm"], verbose=self.verbose)
        x_train_t = _device.to_tensor(x_train, device, train_dtype)
        x_val_t = None if x_val is None else _device.to_tensor(x_val, device, train_dtype)
        result = train_flow(flow, x_train_t, options, generator, x_val_t)
        chosen, alpha_scores = alphas[0], None
        # Without held-out data (early_stopping=False) the grid's first value is kept.
        if len(alphas) > 1 and x_val is not None and not (result.diverged
                                                          or result.interrupted):
            flow, chosen, alpha_scores = self._choose_alpha(
                flow, result, alphas, options, (x_train_t, x_val_t, generator))
        flow.finalize_training()
        flow = flow.to(device, dtype)
        if chosen == 0 and not getattr(flow, "is_injective", False) and (
                flow.is_linear or not result.converged):  # a converged fit has settled
            self._warn_if_unbounded(flow, Xc, result.converged)
        return flow, {
            "loss_curve_": result.loss_curve, "n_iter_": result.n_iter,
            "validation_scores_": result.validation_scores if x_val is not None else None,
            "_split": (x_train, x_val), "_alpha": chosen, "alpha_scores_": alpha_scores,
        }

    @staticmethod
    def _choose_alpha(flow, result, alphas, options, data):
        """The flow and ``alpha`` of best held-out likelihood, and each value's best
        held-out score: ``flow`` was trained with ``alphas[0]``; each further value
        fine-tunes a copy of it (warm start, a short cosine schedule). An interrupt
        during a fine-tune keeps the best so far (``result.interrupted`` is set)."""
        x_train, x_val, generator = data
        best_score, best_flow, chosen = max(result.validation_scores), flow, alphas[0]
        scores = [(alphas[0], best_score)]
        fine_tune = dataclasses.replace(
            options, max_iter=max(_ALPHA_FINE_TUNE_MIN_EPOCHS,
                                  int(_ALPHA_FINE_TUNE_FRACTION * options.max_iter)),
            learning_rate="cosine",
            learning_rate_init=_ALPHA_FINE_TUNE_LEARNING_RATE * options.learning_rate_init)
        for alpha in alphas[1:]:
            candidate = copy.deepcopy(flow)
            with warnings.catch_warnings():  # a short fine-tune: not a fit of its own
                warnings.simplefilter("ignore", ConvergenceWarning)
                tuned = train_flow(candidate, x_train, dataclasses.replace(
                    fine_tune, alpha=alpha), generator, x_val)
            if tuned.interrupted or tuned.diverged or not tuned.validation_scores:
                result.interrupted |= tuned.interrupted
                break
            scores.append((alpha, max(tuned.validation_scores)))
            if scores[-1][1] > best_score:
                best_score, best_flow, chosen = scores[-1][1], candidate, alpha
        return best_flow, chosen, scores

    def _warn_if_unbounded(self, flow, Xc, converged):
        """Without the penalty, data on a lower-dimensional set make the likelihood
        unbounded: the flow's local variance across the set shrinks towards zero for as
        long as training runs (paper, section 5)."""
        if flow.is_linear:
            variances, _ = _exact_linear_solution(Xc, 0.0)
            collapsed = variances.min() <= _SINGULAR_RTOL * variances.max()
        else:
            # Median over points of the smallest local variance relative to the data's
            # global variance along the same direction.
            covariance = torch.as_tensor(Xc.T @ Xc / Xc.shape[0])
            ratios = []
            for x in self._iter_tensor_chunks(Xc, flow):
                with torch.no_grad():
                    _, s, Vh = _jacobian.local_svd(flow, x)
                thinnest = Vh[:, -1, :].to(covariance)
                global_variance = torch.einsum("ni,ij,nj->n", thinnest, covariance, thinnest)
                ratios.append(_device.to_numpy(s[:, -1].to(covariance).pow(-2)
                                               / global_variance))
            collapsed = not converged and np.median(np.concatenate(ratios)) < _COLLAPSE_RATIO
        if collapsed:
            warnings.warn(
                "With alpha=0 the data appear to lie on a lower-dimensional set: the "
                "likelihood is unbounded there, and the flow's Jacobian grows (its "
                "smallest local variances shrink towards zero) without settling. "
                "Set alpha > 0.", DegenerateFitWarning, stacklevel=3)

    @staticmethod
    def _linear_decomposition(flow):
        """Variances (descending) and directions (rows, PCA signs) of a linear flow."""
        weight = _device.to_numpy(flow.weight)
        _, s, Vt = scipy.linalg.svd(weight)
        order = np.argsort(s, kind="stable")
        return 1.0 / s[order] ** 2, _flip_rows(Vt[order])

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

    def _latent_chunks(self, flow, Xc):
        """Latent coordinates of an injective flow at centered ``Xc``."""
        with torch.no_grad():
            chunks = [_device.to_numpy(flow.project(x))
                      for x in self._iter_tensor_chunks(Xc, flow)]
        return np.concatenate(chunks)

    def _mean_local_variances(self, flow, Xc):
        """Arithmetic and geometric means over ``Xc`` of the local variances."""
        total, log_total = np.zeros(Xc.shape[1]), np.zeros(Xc.shape[1])
        for x in self._iter_tensor_chunks(Xc, flow):
            with torch.no_grad():
                s = _jacobian.local_svd(flow, x)[1]
            total += _device.to_numpy(s.pow(-2)).sum(axis=0)
            log_total += _device.to_numpy(-2 * s.log()).sum(axis=0)
        return total / Xc.shape[0], np.exp(log_total / Xc.shape[0])

    def _resolve_n_components(self, ratio, n_features, intrinsic_dimension):
        if self.n_components is None:
            return n_features
        if isinstance(self.n_components, str):  # 'auto'
            return max(1, intrinsic_dimension)
        if isinstance(self.n_components, Integral):
            return int(self.n_components)
        return _n_components_from_ratio(ratio, self.n_components)

    def _check_finite_scores(self, flow, Xc):
        with torch.no_grad():
            bytes_per_row = _FORWARD_BYTES_PER_FEATURE * Xc.shape[1]
            for x in self._iter_tensor_chunks(Xc, flow, bytes_per_row=bytes_per_row):
                if not torch.isfinite(log_likelihood(flow, x)).all():
                    raise FloatingPointError(
                        "The fitted flow gives non-finite log-likelihoods on its own "
                        "training data. Try a larger alpha or a smaller learning_rate_init.")

    # ------------------------------------------------------------------ helpers
    def _flow_device_dtype(self, flow=None):
        parameter = next((flow or self.flow_).parameters())
        return parameter.device, parameter.dtype

    def _iter_tensor_chunks(self, Xc, flow=None, bytes_per_row=None):
        device, dtype = self._flow_device_dtype(flow)
        if bytes_per_row is None:
            bytes_per_row = _jacobian.jacobian_bytes_per_row(Xc.shape[1], dtype)
        for rows in _jacobian.iter_row_chunks(Xc.shape[0], bytes_per_row):
            yield _device.to_tensor(Xc[rows], device, dtype)

    def _validate_centered(self, X):
        """Validated ``X``, centered lazily chunk by chunk (no centered copy of X)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return _LazilyCentered(X, self.mean_)

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

        Examples
        --------
        >>> import numpy as np
        >>> from flowpca import NormalizingFlowPCA
        >>> from flowpca.datasets import make_sine_wave
        >>> X, _ = make_sine_wave(200, random_state=0)
        >>> model = NormalizingFlowPCA(n_components=2, n_layers=2, max_iter=5,
        ...                            random_state=0).fit(X)
        >>> model.transform(X).shape
        (200, 2)

        The linear flow's components are PCA's:

        >>> from sklearn.decomposition import PCA
        >>> linear = NormalizingFlowPCA(n_components=2, flow="linear").fit(X)
        >>> np.allclose(linear.transform(X), PCA(n_components=2).fit_transform(X))
        True
        """
        Xc = self._validate_centered(X)
        if getattr(self.flow_, "is_injective", False):  # latent coordinates, g^+(x)
            return self._map_chunks(Xc, self.flow_.project, (self.n_components_,))
        if self.flow_.is_linear:
            chunks = [Xc[rows] @ self.components_.T for rows in _jacobian.iter_row_chunks(
                Xc.shape[0], 16 * Xc.shape[1])]
            return np.concatenate(chunks) if chunks else np.empty((0, self.n_components_))
        return self._map_chunks(Xc, lambda x: self._oriented_components(x)[2],
                                (self.n_components_,))

    def _map_chunks(self, Xc, compute, trailing_shape, bytes_per_row=None):
        """Apply ``compute`` to each row chunk of ``Xc`` (as a centered tensor on the
        flow's device) and gather the results, shape ``(n_samples,) + trailing_shape``."""
        out = np.empty((Xc.shape[0],) + tuple(trailing_shape))
        start = 0
        for x in self._iter_tensor_chunks(Xc, bytes_per_row=bytes_per_row):
            out[start:start + x.shape[0]] = _device.to_numpy(compute(x))
            start += x.shape[0]
        return out

    def _oriented_components(self, x, full=False):
        """``(s, Vh, y_hat)`` of the tracked components at centered points ``x``: matched
        and signed like the nearest reference point (see :mod:`flowpca._orientation`),
        ``y_hat`` projected or integrated (``component_map``, see
        :mod:`flowpca._integration`). With ``full``, all ``D`` components: the tracked
        ones first, then the others (projected) in decreasing local variance with
        arbitrary signs."""
        n_features, k = x.shape[1], self.n_components_
        n_candidates = n_features if full else min(
            n_features, k + _orientation.N_EXTRA_CANDIDATES)
        method = "full" if full else self._svd_method(n_features, n_candidates)
        with torch.no_grad() if method == "full" else _nullcontext():
            s, Vh, y_hat = _jacobian.top_local_components(self.flow_, x, n_candidates,
                                                          method)
        s, Vh, y_hat = s.detach(), Vh.detach(), y_hat.detach()
        points = torch.as_tensor(self._reference_points).to(x)
        distances = torch.cdist(x, points)
        nearest = distances.argmin(dim=1)
        point_directions = torch.as_tensor(self._reference_directions).to(x)
        reference = point_directions[nearest]
        index, signs = _orientation.match_to_reference(Vh, reference)
        if full:  # the untracked candidates follow, in their original order
            rank = torch.arange(n_candidates, device=x.device).expand(x.shape[0], -1) + k
            rank = rank.scatter(1, index, torch.arange(k, device=x.device).expand_as(index))
            index = rank.argsort(dim=1)
            signs = torch.cat([signs, torch.ones_like(s[:, k:])], dim=1)
        s = s.gather(1, index)
        Vh = Vh.gather(1, index.unsqueeze(-1).expand(-1, -1, n_features)) * signs.unsqueeze(-1)
        y_hat = y_hat.gather(1, index) * signs
        if getattr(self, "_component_map", "projected") == "integrated":
            integrated = _integration.extend(
                x, Vh[:, :k], distances, points, point_directions,
                torch.as_tensor(self._reference_point_components).to(x))
            y_hat = torch.cat([integrated, y_hat[:, k:]], dim=1)
        return s, Vh, y_hat

    def inverse_transform(self, X, *, return_residuals=False):
        """Map components back to data space.

        Returns the point whose components are ``X``, with missing trailing components
        taken as zero, as in PCA. For the linear flow this is ``X @ components_ + mean_``,
        PCA's inverse transform. For nonlinear flows the equation
        ``transform(x) = X`` is solved per point, from the reference point whose components
        are nearest ``X``, by a quasi-Newton iteration (one evaluation of the components
        per step) and, for up to 16 features, Levenberg-Marquardt for the points it
        leaves (see :mod:`flowpca._inverse`). With all components given, a point left
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

        Examples
        --------
        >>> import numpy as np
        >>> from flowpca import NormalizingFlowPCA
        >>> from flowpca.datasets import make_sine_wave
        >>> X, _ = make_sine_wave(200, random_state=0)
        >>> model = NormalizingFlowPCA(n_layers=2, max_iter=5, random_state=0).fit(X)
        >>> X_back = model.inverse_transform(model.transform(X[:5]))
        >>> np.allclose(X_back, X[:5], atol=1e-6)  # all components kept: X comes back
        True
        """
        check_is_fitted(self)
        X = self._check_components(X)
        if getattr(self.flow_, "is_injective", False):  # the point g(z) on the manifold
            with torch.no_grad():
                X_original = self._map_chunks(X, self.flow_.generate,
                                              (self.n_features_in_,)) + self.mean_
        elif self.flow_.is_linear:
            X_original = X @ self.components_ + self.mean_
        else:
            X_original, residuals = self._solve_inverse(X)
            return (X_original, residuals) if return_residuals else X_original
        return (X_original, np.zeros(X.shape[0])) if return_residuals else X_original

    def _solve_inverse(self, X):
        """``inverse_transform`` of a nonlinear bijective flow: the points and their
        residuals, with the warnings."""
        n_features, k = self.n_features_in_, self.n_components_
        device, dtype = self._flow_device_dtype()
        points = torch.as_tensor(self._reference_points).to(device, dtype)
        point_components = torch.as_tensor(self._reference_point_components).to(points)
        out, residuals, n_ambiguous = [], [], 0
        check = k == n_features and n_features <= _LM_MAX_FEATURES
        distinct = _PREIMAGE_RTOL * math.sqrt(max(float(np.sum(self.explained_variance_)),
                                                  np.finfo(float).tiny))
        for rows in _jacobian.iter_row_chunks(X.shape[0], _jacobian.jacobian_bytes_per_row(
                n_features, dtype) * (2 * n_features + 2)):
            target = torch.zeros(rows.stop - rows.start, n_features, device=device,
                                 dtype=dtype)
            target[:, :k] = _device.to_tensor(X[rows], device, dtype)

            def residual_and_directions(x, index):
                _, Vh, y_hat = self._oriented_components(x, full=True)
                return y_hat - target[index], Vh

            # Start from the reference point whose components are nearest the target;
            # rows left unconverged restart from the next nearest ones. Only with all
            # components: then a solution exists (one per fold of the component map),
            # while zero-filled trailing components may have none, and restarts would
            # only multiply the cost of such points.
            restarts = 0 if k < n_features else \
                _INVERSE_RESTARTS if n_features <= _LM_MAX_FEATURES else 1
            n_starts = min(max(1 + restarts, _PREIMAGE_CHECK_STARTS if check else 1),
                           points.shape[0])
            starts = torch.cdist(target[:, :k], point_components).topk(
                n_starts, dim=1, largest=False).indices
            x = points[starts[:, 0]]
            norm = torch.full((x.shape[0],), torch.inf, device=device, dtype=dtype)
            for attempt in range(min(n_starts, 1 + restarts)):
                left = (norm > self.inverse_tol).nonzero().squeeze(1)  # all at first
                if not len(left):
                    break
                x_try, norm_try = self._solve_components(
                    residual_and_directions, points[starts[left, attempt]], left)
                better = norm_try < norm[left]
                x[left[better]], norm[left[better]] = x_try[better], norm_try[better]
            if check and n_starts > 1:
                n_ambiguous += self._count_other_preimages(
                    residual_and_directions, x, norm, points[starts[:, :_PREIMAGE_CHECK_STARTS]],
                    distinct)
            out.append(_device.to_numpy(x))
            residuals.append(_device.to_numpy(norm))
        residuals = np.concatenate(residuals) if residuals else np.empty(0)
        failed = ~(residuals <= self.inverse_tol)
        if failed.any():
            warnings.warn(f"inverse_transform did not converge for {failed.sum()} of "
                          f"{failed.size} points (worst residual {np.nanmax(residuals):.3g} "
                          f"> inverse_tol={self.inverse_tol}).", ConvergenceWarning,
                          stacklevel=3)
        if n_ambiguous:
            warnings.warn(
                f"{n_ambiguous} of {residuals.size} points have another preimage with the "
                "same components (the component map is not one to one there); "
                "inverse_transform returned the one in the chart of the reference point "
                "with the nearest components.", AmbiguousInverseWarning, stacklevel=3)
        X_original = np.concatenate(out) if out else np.empty((0, n_features))
        return X_original + self.mean_, residuals

    def _count_other_preimages(self, residual_and_directions, x, norm, candidates, distinct):
        """How many converged rows of ``x`` have a second solution farther than
        ``distinct`` from it: one solve per row from the candidate start (rows of
        ``candidates``, shape (n, c, D)) farthest from its solution."""
        solved = (norm <= self.inverse_tol).nonzero().squeeze(1)
        if not len(solved):
            return 0
        farthest = (candidates[solved] - x[solved, None, :]).norm(dim=2).argmax(dim=1)
        x_other, norm_other = self._solve_components(
            residual_and_directions, candidates[solved, farthest], solved)
        other = (norm_other <= self.inverse_tol) & (
            (x_other - x[solved]).norm(dim=1) > distinct)
        return int(other.sum())

    def _solve_components(self, residual_and_directions, x0, rows):
        """Solve ``transform(x) = target[rows]`` from ``x0``: quasi-Newton, then
        Levenberg-Marquardt for the rows it leaves (up to ``_LM_MAX_FEATURES``)."""
        x, norm = _inverse.frame_broyden(
            lambda x, index: residual_and_directions(x, rows[index]), x0,
            tol=self.inverse_tol, max_iter=self.inverse_max_iter)
        left = (norm > self.inverse_tol).nonzero().squeeze(1)
        if len(left) and x0.shape[1] <= _LM_MAX_FEATURES:
            x_left, norm_left = _inverse.levenberg_marquardt(
                lambda x, index: residual_and_directions(x, rows[left[index]])[0], x[left],
                tol=self.inverse_tol, max_iter=self.inverse_max_iter)
            x[left], norm[left] = x_left, norm_left
        return x, norm

    # ------------------------------------------------------------------ diagnostics
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

        Examples
        --------
        A plane in 3-D: the direction across it has variance ``alpha``, the floor.

        >>> from flowpca import NormalizingFlowPCA
        >>> from flowpca.datasets import make_embedded_plane
        >>> X, _ = make_embedded_plane(200, random_state=0)
        >>> model = NormalizingFlowPCA(flow="linear", alpha=1e-4).fit(X)
        >>> model.local_variances(X[:2]).round(4)
        array([[5.2161e+00, 1.8622e+00, 1.0000e-04],
               [5.2161e+00, 1.8622e+00, 1.0000e-04]])
        """
        Xc = self._validate_centered(X)
        self._check_bijective("local_variances")
        return self._map_chunks(Xc, lambda x: _jacobian.local_svd(self.flow_, x)[1] ** -2,
                                (Xc.shape[1],))

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

        Examples
        --------
        >>> import numpy as np
        >>> from flowpca import NormalizingFlowPCA
        >>> rng = np.random.RandomState(0)
        >>> X = rng.normal(size=(200, 3)) * [2.0, 1.0, 1e-3]  # a flat sheet in 3-D
        >>> model = NormalizingFlowPCA(flow="linear").fit(X)
        >>> model.local_intrinsic_dimension(X[:3])
        array([2, 2, 2])
        """
        check_is_fitted(self)
        if getattr(self.flow_, "is_injective", False):
            return np.full(self._validate_centered(X).shape[0], self.n_components_)
        return intrinsic_dimension(np.atleast_2d(self.local_variances(X)), self.alpha_,
                                   self.intrinsic_dimension_threshold)

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

        Examples
        --------
        >>> import numpy as np
        >>> from flowpca import NormalizingFlowPCA
        >>> from flowpca.datasets import make_sine_wave
        >>> X, _ = make_sine_wave(200, random_state=0)
        >>> model = NormalizingFlowPCA(n_components=2, n_layers=2, max_iter=5,
        ...                            random_state=0).fit(X)
        >>> directions = model.local_directions(X[:4])
        >>> directions.shape
        (4, 3, 2)
        >>> np.allclose(np.linalg.norm(directions, axis=1), 1.0)
        True
        """
        Xc = self._validate_centered(X)
        self._check_bijective("local_directions")
        return self._map_chunks(Xc, lambda x: self._oriented_components(x)[1].transpose(1, 2),
                                (Xc.shape[1], self.n_components_))

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

        Examples
        --------
        >>> import numpy as np
        >>> from flowpca import NormalizingFlowPCA
        >>> from flowpca.datasets import make_sine_wave
        >>> X, _ = make_sine_wave(200, random_state=0)
        >>> model = NormalizingFlowPCA(flow="linear", alpha=1e-3).fit(X)
        >>> covariance = model.local_covariance(X[:1])[0]
        >>> np.allclose(covariance, np.cov(X.T, bias=True) + 1e-3 * np.eye(3))
        True
        """
        Xc = self._validate_centered(X)

        self._check_bijective("local_covariance")

        def covariance(x):
            _, s, Vh = _jacobian.local_svd(self.flow_, x)
            return Vh.transpose(1, 2) @ (Vh / s.unsqueeze(-1) ** 2)

        return self._map_chunks(Xc, covariance, (Xc.shape[1],) * 2)

    def _check_components(self, X):
        X = check_array(X, dtype=[np.float64, np.float32]).astype(np.float64, copy=False)
        if X.shape[1] != self.n_components_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} "
                             f"expects {self.n_components_} components as input.")
        return X

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

        Examples
        --------
        The linear flow's density is the Gaussian with covariance ``Sigma + alpha I``:

        >>> import numpy as np
        >>> from scipy.stats import multivariate_normal
        >>> from flowpca import NormalizingFlowPCA
        >>> from flowpca.datasets import make_sine_wave
        >>> X, _ = make_sine_wave(200, random_state=0)
        >>> model = NormalizingFlowPCA(flow="linear", alpha=1e-3).fit(X)
        >>> gaussian = multivariate_normal(X.mean(axis=0),
        ...                                np.cov(X.T, bias=True) + 1e-3 * np.eye(3))
        >>> np.allclose(model.score_samples(X[:5]), gaussian.logpdf(X[:5]))
        True
        """
        return self._score_samples_centered(self._validate_centered(X))

    def _score_samples_centered(self, Xc):
        if getattr(self.flow_, "is_injective", False):
            with torch.no_grad():
                return self._map_chunks(Xc, self.flow_.manifold_log_likelihood, ())
        return self._map_chunks(Xc, lambda x: log_likelihood(self.flow_, x), (),
                                bytes_per_row=_FORWARD_BYTES_PER_FEATURE * Xc.shape[1])

    def _check_bijective(self, method):
        if getattr(self.flow_, "is_injective", False):
            raise ValueError(f"{method} needs a bijective flow: flow='injective' has no "
                             "square Jacobian; use transform (latent coordinates) and "
                             "off_manifold_distance instead.")

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

        Examples
        --------
        >>> import numpy as np
        >>> from flowpca import NormalizingFlowPCA
        >>> from flowpca.datasets import make_sine_wave
        >>> X, _ = make_sine_wave(200, random_state=0)
        >>> model = NormalizingFlowPCA(2, flow="injective", n_layers=2, max_iter=5,
        ...                            random_state=0).fit(X)
        >>> distance = model.off_manifold_distance(X)
        >>> distance.shape
        (200,)
        >>> bool(np.allclose(model.off_manifold_distance(model.sample(5, random_state=0)),
        ...                  0, atol=1e-6))  # samples lie on the manifold
        True
        """
        Xc = self._validate_centered(X)
        if not getattr(self.flow_, "is_injective", False):
            raise ValueError("off_manifold_distance needs flow='injective': a bijective "
                             "flow's manifold is the whole space.")
        with torch.no_grad():
            return self._map_chunks(Xc, self.flow_.off_manifold_distance, ())

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

        Examples
        --------
        >>> from flowpca import NormalizingFlowPCA
        >>> from flowpca.datasets import make_sine_wave
        >>> X, _ = make_sine_wave(200, random_state=0)
        >>> model = NormalizingFlowPCA(flow="linear").fit(X)
        >>> round(model.score(X), 2)
        -3.85
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

        Examples
        --------
        >>> import numpy as np
        >>> from flowpca import NormalizingFlowPCA
        >>> from flowpca.datasets import make_sine_wave
        >>> X, _ = make_sine_wave(200, random_state=0)
        >>> model = NormalizingFlowPCA(n_layers=2, max_iter=5, random_state=0).fit(X)
        >>> model.sample(4).shape
        (4, 3)
        >>> np.array_equal(model.sample(4, random_state=1), model.sample(4, random_state=1))
        True
        """
        check_is_fitted(self)
        if not isinstance(n_samples, Integral) or n_samples < 1:
            raise ValueError(f"Invalid value for 'n_samples': {n_samples!r}. The sampling "
                             "requires at least one sample.")
        rng = check_random_state(self.random_state if random_state is None else random_state)
        device, dtype = self._flow_device_dtype()
        generator = _device.make_generator(_device.seed_from(rng), device)
        out = np.empty((n_samples, self.n_features_in_))
        bytes_per_row = _FORWARD_BYTES_PER_FEATURE * self.n_features_in_
        n_redrawn = 0
        with torch.no_grad():
            for rows in _jacobian.iter_row_chunks(n_samples, bytes_per_row):
                z = torch.randn(rows.stop - rows.start, self.n_features_in_,
                                generator=generator, device=device, dtype=dtype)
                x = self.flow_.inverse(z)
                # Heavy-tailed flows (asinh layers invert to nested sinh) can overflow far
                # in the tails: redraw those rows, i.e. sample the representable part.
                for _ in range(_MAX_REDRAWS):
                    bad = ~torch.isfinite(x).all(dim=1)
                    if not bad.any():
                        break
                    n_redrawn += int(bad.sum())
                    z = torch.randn(int(bad.sum()), self.n_features_in_,
                                    generator=generator, device=device, dtype=dtype)
                    x[bad] = self.flow_.inverse(z)
                else:
                    raise FloatingPointError("The fitted flow's inverse overflows for most "
                                             "draws; the model cannot be sampled.")
                out[rows] = _device.to_numpy(x)
        if n_redrawn:
            warnings.warn(f"{n_redrawn} of {n_samples} draws overflowed in the flow's "
                          "inverse (heavy tails) and were redrawn.", UserWarning,
                          stacklevel=2)
        return out + self.mean_

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

        Examples
        --------
        >>> from flowpca import NormalizingFlowPCA
        >>> from flowpca.datasets import make_sine_wave
        >>> X, _ = make_sine_wave(200, random_state=0)
        >>> NormalizingFlowPCA(n_components=2, flow="linear").fit(X).get_feature_names_out()
        array(['flowpca0', 'flowpca1'], dtype=object)
        """
        check_is_fitted(self)
        _check_feature_names_in(self, input_features)
        return np.asarray([f"flowpca{i}" for i in range(self.n_components_)], dtype=object)

    # ------------------------------------------------------------------ persistence
    def __getstate__(self):
        # No torch object in the state (see flowpca._persistence): flows as class name,
        # configuration and numpy weights on CPU; a torch.device parameter as a string.
        state = dict(super().__getstate__())  # object.__getstate__ returns __dict__ itself
        for name, value in state.items():
            if isinstance(value, Flow):
                state[name] = _persistence.flow_to_state(value)
            elif isinstance(value, torch.device):
                state[name] = _persistence.device_to_state(value)
        state["_flowpca_version"] = __version__
        return state

    def __setstate__(self, state):
        state = dict(state)
        _persistence.warn_if_other_version(type(self).__name__,
                                           state.pop("_flowpca_version", None), __version__)
        for name, value in state.items():
            if _persistence.is_stored_flow(value):
                flow = _persistence.flow_from_state(value)
                # A fitted flow is frozen; a flow given as the parameter stays trainable.
                state[name] = flow.requires_grad_(False).eval() if name.endswith("_") else flow
            else:
                state[name] = _persistence.device_from_state(value)
        if "flow_" in state and "alpha_" not in state:
            # Saved before the 'auto' parameters: every value was explicit then.
            for name in AUTO_PARAMETERS:
                state.setdefault(f"{name}_", state.get(name))
            state.setdefault("alpha_scores_", None)
        super().__setstate__(state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags
