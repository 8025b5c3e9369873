"""Progress reporting for training: a line per epoch when ``verbose`` (like
scikit-learn's MLP estimators) and an optional progress bar (tqdm).

A bar is shown when the estimator is verbose and tqdm is installed (``pip install
"flowpca[progress]"``), from the moment a fit has run for :data:`BAR_DELAY_S` seconds,
so that short fits stay quiet. Without tqdm, verbose fits print the plain lines only.
:func:`progress_bars` forces bars on or off in a block of code, whatever ``verbose`` is;
the command line uses it for ``--progress`` and ``--no-progress``.
"""

import contextlib
import contextvars
import sys
import time

# Seconds a verbose fit runs before its bar appears (bars forced on appear at once).
BAR_DELAY_S = 2.0

_forced_bars = contextvars.ContextVar("flowpca_progress_bars", default=None)


@contextlib.contextmanager
def progress_bars(enabled):
    """Show (True) or hide (False) a progress bar for every fit in this block.

    Parameters
    ----------
    enabled : bool or None
        True shows a bar from the first epoch, even with ``verbose=0`` (when tqdm is
        installed); False never shows one; None restores the default (a bar for
        verbose fits that last more than :data:`BAR_DELAY_S` seconds).

    Yields
    ------
    None
    """
    token = _forced_bars.set(enabled)
    try:
        yield
    finally:
        _forced_bars.reset(token)


def tqdm_available():
    """Whether tqdm can be imported (it is an optional dependency).

    Returns
    -------
    available : bool
    """
    return _tqdm_class() is not None


def _tqdm_class():
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


class EpochReporter:
    """Reports the epochs of one training run; use it as a context manager.

    Parameters
    ----------
    max_iter : int
        Epochs at most (the length of the bar).
    verbose : int, default=0
        Print ``"Epoch N, loss = ..."`` after every epoch when positive.
    bar : bool or None, default=None
        Show a progress bar (when tqdm is installed): None follows :func:`progress_bars`
        when set there, else shows one for verbose fits after :data:`BAR_DELAY_S`
        seconds.
    """

    def __init__(self, max_iter, verbose=0, bar=None):
        self.verbose = verbose
        forced = _forced_bars.get() if bar is None else bar
        wanted = bool(verbose) if forced is None else forced
        tqdm = _tqdm_class() if wanted else None
        self._delay = BAR_DELAY_S if forced is None else 0.0
        self._start = time.monotonic()
        self._bar = None if tqdm is None else tqdm(
            total=max_iter, desc="training", unit="epoch", leave=False, file=sys.stderr,
            delay=self._delay, dynamic_ncols=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def epoch(self, n_epoch, loss, validation_score=None):
        """Report a finished epoch.

        Parameters
        ----------
        n_epoch : int
            Epochs run so far (1 for the first).
        loss : float
            Mean training loss of the epoch.
        validation_score : float or None, default=None
            Held-out mean log-likelihood (early stopping), when there is one.
        """
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
            self._bar.update(1)
        line = f"Epoch {n_epoch}, loss = {loss:.8f}"
        if validation_score is not None:
            line += f", validation log-likelihood = {validation_score:.8f}"
        self.message(line)

    def message(self, text):
        """Print ``text`` on standard output when verbose, above the bar if there is one.

        Parameters
        ----------
        text : str
        """
        if not self.verbose:
            return
        if self._bar is not None and time.monotonic() - self._start >= self._delay:
            self._bar.write(text, file=sys.stdout)  # clears the bar, prints, redraws it
        else:
            print(text, flush=True)  # (tqdm's write would show a bar still delayed)

    def close(self):
        """Remove the bar (idempotent)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
