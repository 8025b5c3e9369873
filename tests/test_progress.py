"""Progress reporting during training: epoch lines with ``verbose`` (like scikit-learn's
MLP), an optional tqdm bar, and silence with ``verbose=0``."""

import re
import sys

import numpy as np
import pytest

from flowpca import NormalizingFlowPCA, _progress

X = np.random.RandomState(0).normal(size=(50, 2)) * [2.0, 0.5]
EPOCH_LINE = re.compile(r"^Epoch (\d+), loss = -?\d+\.\d{8}$")
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def fit(max_iter=3, **params):
    """A few epochs of the linear flow trained by Adam (fast, deterministic)."""
    return NormalizingFlowPCA(flow="linear", solver="adam", max_iter=max_iter,
                              random_state=0, **params).fit(X)


@pytest.fixture
def no_bar_delay(monkeypatch):
    """Verbose fits show their bar after BAR_DELAY_S seconds; these fits are shorter."""
    monkeypatch.setattr(_progress, "BAR_DELAY_S", 0.0)


@pytest.fixture
def without_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes ``import tqdm`` fail
    assert not _progress.tqdm_available()


def test_verbose_prints_one_line_per_epoch(capsys, without_tqdm):
    model = fit(verbose=1)
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert [int(EPOCH_LINE.match(line).group(1)) for line in lines] == [1, 2, 3]
    losses = [float(line.split("= ")[1]) for line in lines]
    np.testing.assert_allclose(losses, model.loss_curve_, atol=5e-9)
    assert captured.err == ""  # no tqdm: plain lines only, no bar


def test_verbose_with_early_stopping_reports_the_validation_score(capsys, without_tqdm):
    model = fit(verbose=1, early_stopping=True)
    scores = [float(re.search(r"validation log-likelihood = (\S+)$", line).group(1))
              for line in capsys.readouterr().out.splitlines()]
    np.testing.assert_allclose(scores, model.validation_scores_, atol=5e-9)


def test_verbose_zero_prints_nothing(capsys, no_bar_delay):
    fit(verbose=0)
    assert capsys.readouterr() == ("", "")


def test_verbose_shows_a_bar_with_tqdm(capsys, no_bar_delay):
    import tqdm  # noqa: F401 (the test extra installs it)
    fit(verbose=1)
    captured = capsys.readouterr()
    assert re.search(r"training: .*\| \d/3 ", captured.err)  # the bar, on stderr
    # The epoch lines are printed above the bar, on stdout, unchanged.
    assert [EPOCH_LINE.match(line) is not None for line in captured.out.splitlines()] == [
        True] * 3


def test_bar_waits_before_appearing(capsys, monkeypatch):
    """A verbose fit shorter than the delay shows no bar (tqdm's ``delay``)."""
    import tqdm  # noqa: F401 (the test extra installs it)
    monkeypatch.setattr(_progress, "BAR_DELAY_S", 3600.0)
    fit(verbose=1)
    assert capsys.readouterr().err == ""


def test_forced_bars_without_verbose(capsys):
    import tqdm  # noqa: F401 (the test extra installs it)
    with _progress.progress_bars(True):
        fit(verbose=0)
    captured = capsys.readouterr()
    assert "training:" in captured.err and captured.out == ""


def test_forced_off_keeps_the_lines(capsys, no_bar_delay):
    with _progress.progress_bars(False):
        fit(verbose=1)
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 3 and captured.err == ""


def test_forced_bars_need_tqdm(capsys, without_tqdm):
    with _progress.progress_bars(True):
        fit(verbose=0)
    assert capsys.readouterr() == ("", "")


def test_progress_bars_setting_is_restored():
    with _progress.progress_bars(True):
        with _progress.progress_bars(False):
            assert _progress._forced_bars.get() is False
        assert _progress._forced_bars.get() is True
    assert _progress._forced_bars.get() is None


def test_reporter_messages_only_when_verbose(capsys, without_tqdm):
    with _progress.EpochReporter(10, verbose=0) as quiet:
        quiet.message("Setting learning rate to 0.002")
    with _progress.EpochReporter(10, verbose=1) as loud:
        loud.message("Setting learning rate to 0.002")
    assert capsys.readouterr().out == "Setting learning rate to 0.002\n"
