"""The command line, run as a user runs it: ``python -m flowpca ...`` in a subprocess.

Every subcommand and each kind of bad input (missing or unreadable files, non-numeric
columns, NaN and inf, wrong widths, bad parameter values, bad model files) is run in a
real process, asserting the exit status and the one-line message. Finer variants of the
file readers (ragged rows, .npz keys, array dtypes) are checked in-process through
``main``, which is the same code without the process start-up.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.decomposition import PCA

from flowpca import NormalizingFlowPCA
from flowpca._cli import main
from flowpca._cli.io import read_array

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def run(*args, cwd, python_code=None):
    """``python -m flowpca *args`` in ``cwd`` (or ``python -c python_code *args``)."""
    command = [sys.executable] + (["-c", python_code] if python_code else ["-m", "flowpca"])
    return subprocess.run(command + [str(a) for a in args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=600)


def assert_error(result, command, message, status=1):
    """Exit ``status`` and exactly one line on stderr: ``flowpca COMMAND: error: ...``
    containing ``message``."""
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"flowpca {command}: error: "), lines[0]
    assert message in lines[0], lines[0]


def write_csv(path, text):
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A directory with a small data set (CSV with a header, and NPY) and two models
    fitted by the command line: the linear flow (joblib) and a 2-epoch MLP (skops)."""
    directory = tmp_path_factory.mktemp("cli")
    rng = np.random.RandomState(0)
    X = rng.normal(size=(60, 3)) * [3.0, 1.0, 0.3] + [1.0, -2.0, 0.5]
    np.savetxt(directory / "data.csv", X, delimiter=",", header="a,b,c", comments="",
               fmt="%.17g")
    np.save(directory / "data.npy", X)
    linear = run("fit", "data.csv", "--n-components", 2, "--flow", "linear",
                 "--out", "linear.joblib", cwd=directory)
    assert linear.returncode == 0, linear.stderr
    mlp = run("fit", "data.npy", "--n-components", 2, "--flow", "mlp", "--alpha", 1e-3,
              "--max-iter", 2,
              "--random-state", 0, "--out", "mlp.skops", "--verbose", "--no-progress",
              cwd=directory)
    assert mlp.returncode == 0, mlp.stderr
    return {"dir": directory, "X": X, "linear": linear, "mlp": mlp}


# ------------------------------------------------------------------------ subcommands
def test_help_lists_every_subcommand(tmp_path):
    result = run("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("demo", "fit", "transform", "inverse", "score", "sample"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), command


def test_console_script_runs_main(tmp_path):
    """The ``flowpca`` console script of the installed package is ``python -m flowpca``."""
    from importlib.metadata import entry_points

    # The README's test command installs the package, so its console script is there.
    scripts = entry_points(group="console_scripts", name="flowpca")
    assert len(scripts) == 1, "no installed 'flowpca' console script: pip install '.[test]'"
    (script,) = scripts
    assert script.value == "flowpca.__main__:main"
    result = run("--version", cwd=tmp_path, python_code=(
        "import sys; from importlib.metadata import entry_points; "
        "(s,) = entry_points(group='console_scripts', name='flowpca'); sys.exit(s.load()())"))
    assert result.returncode == 0 and result.stdout.startswith("flowpca "), result.stderr


@pytest.mark.parametrize("command", ["demo", "fit", "transform", "inverse", "score",
                                     "sample"])
def test_subcommand_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: flowpca {command}")
    if command != "demo":
        assert "--out" in out and ("--model" in out or command == "fit")


def test_fit_saves_the_estimator_python_loads(work):
    model = joblib.load(work["dir"] / "linear.joblib")
    assert isinstance(model, NormalizingFlowPCA)
    assert model.get_params()["flow"] == "linear" and model.n_components_ == 2
    pca = PCA(n_components=2).fit(work["X"])
    np.testing.assert_allclose(model.components_, pca.components_, atol=1e-10)
    assert "Saved the model to linear.joblib" in work["linear"].stdout


def test_fit_verbose_prints_epoch_lines_and_one_line_warnings(work):
    lines = work["mlp"].stdout.splitlines()
    assert lines[0].startswith("Epoch 1, loss = ") and lines[1].startswith("Epoch 2, ")
    assert "2 epochs" in work["mlp"].stdout
    # max_iter=2 cannot converge: the warning is one line, and --no-progress shows no bar.
    assert work["mlp"].stderr.strip().splitlines() == [
        "flowpca: ConvergenceWarning: Stochastic optimizer: maximum iterations (2) reached "
        "and the optimization hasn't converged yet."]


def test_fit_progress_bar(work, tmp_path):
    result = run("fit", work["dir"] / "data.csv", "--max-iter", 3, "--random-state", 0,
                 "--out", "m.joblib", "--progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"training: .*/3 ", result.stderr)
    assert "Epoch" not in result.stdout  # a bar without --verbose: no epoch lines


def test_transform_equals_the_estimators(work, tmp_path):
    result = run("transform", "--model", work["dir"] / "mlp.skops", work["dir"] / "data.csv",
                 "--out", "components.npy", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    import skops.io as sio

    model = sio.load(work["dir"] / "mlp.skops",
                     trusted=["flowpca._estimator.NormalizingFlowPCA"])
    np.testing.assert_allclose(np.load(tmp_path / "components.npy"),
                               model.transform(work["X"]), rtol=1e-12, atol=1e-12)


def test_fit_transform_inverse_round_trip_on_csv(work, tmp_path):
    """With all components of the linear flow, inverse(transform(X)) is X; transform
    without --out writes CSV on standard output."""
    fit = run("fit", work["dir"] / "data.csv", "--flow", "linear", "--out", "all.joblib",
              cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr
    transform = run("transform", "--model", "all.joblib", work["dir"] / "data.csv",
                    cwd=tmp_path)
    assert transform.returncode == 0, transform.stderr
    assert transform.stdout.splitlines()[0] == "flowpca0,flowpca1,flowpca2"
    (tmp_path / "components.csv").write_text(transform.stdout)
    inverse = run("inverse", "--model", "all.joblib", "components.csv", "--out", "back.csv",
                  cwd=tmp_path)
    assert inverse.returncode == 0, inverse.stderr
    assert (tmp_path / "back.csv").read_text().splitlines()[0] == "x0,x1,x2"
    np.testing.assert_allclose(read_array(tmp_path / "back.csv"), work["X"], rtol=0,
                               atol=1e-8)


def test_score_prints_the_mean_and_writes_per_sample(work, tmp_path):
    result = run("score", "--model", work["dir"] / "linear.joblib", work["dir"] / "data.npy",
                 "--out", "scores.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    model = joblib.load(work["dir"] / "linear.joblib")
    mean = float(re.search(r"mean log-likelihood: (\S+) nats per sample \(60 samples\)",
                           result.stdout).group(1))
    assert mean == pytest.approx(model.score(work["X"]), abs=1e-6)
    scores = read_array(tmp_path / "scores.csv")
    np.testing.assert_allclose(scores[:, 0], model.score_samples(work["X"]), rtol=1e-14)


def test_sample_writes_the_estimators_draws(work, tmp_path):
    result = run("sample", "--model", work["dir"] / "linear.joblib", "--n-samples", 5,
                 "--random-state", 3, "--out", "samples.npz", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    model = joblib.load(work["dir"] / "linear.joblib")
    with np.load(tmp_path / "samples.npz") as archive:
        np.testing.assert_array_equal(archive["X"], model.sample(5, random_state=3))


# ------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("name, content, message", [
    ("missing.csv", None, "missing.csv: no such file."),
    ("data.txt", "1,2\n3,4\n", "data.txt: unsupported file type '.txt'; use .csv, .npy "
                               "or .npz."),
    ("text.csv", "a,b,c\n1,2,3\n4,high,6\n", "text.csv: column 2 ('b') is not numeric "
                                             "('high') at line 3."),
    ("nan.csv", "a,b,c\n1,2,3\n4,5,nan\n", "nan.csv: column 3 ('c') contains NaN at line 3"),
    ("inf.csv", "1,2,3\n4,5,6\n-inf,8,9\n", "inf.csv: column 1 contains -inf at line 3"),
])
def test_bad_data_files(name, content, message, tmp_path):
    if content is not None:
        write_csv(tmp_path / name, content)
    result = run("fit", name, "--out", "m.joblib", cwd=tmp_path)
    assert_error(result, "fit", message)
    assert not (tmp_path / "m.joblib").exists()


def test_wrong_width_uses_scikit_learns_message(work, tmp_path):
    np.save(tmp_path / "narrow.npy", work["X"][:, :2])
    result = run("transform", "--model", work["dir"] / "linear.joblib", "narrow.npy",
                 cwd=tmp_path)
    assert_error(result, "transform", "X has 2 features, but NormalizingFlowPCA is "
                                      "expecting 3 features as input.")


@pytest.mark.parametrize("command, width, message", [
    ("score", 2, "X has 2 features, but NormalizingFlowPCA is expecting 3 features as input."),
    ("inverse", 3, "X has 3 features, but NormalizingFlowPCA expects 2 components as input."),
])
def test_wrong_width_for_score_and_inverse(command, width, message, work, tmp_path):
    np.save(tmp_path / "wrong.npy", work["X"][:, :width])
    result = run(command, "--model", work["dir"] / "linear.joblib", "wrong.npy",
                 "--out", "out.csv", cwd=tmp_path)
    assert_error(result, command, message)
    assert not (tmp_path / "out.csv").exists()


def test_bad_parameter_uses_the_estimators_message(work, tmp_path):
    with pytest.raises(ValueError) as expected:
        NormalizingFlowPCA(alpha=-1.0, flow="mlp").fit(work["X"])
    result = run("fit", work["dir"] / "data.csv", "--alpha", -1, "--out", "m.joblib",
                 cwd=tmp_path)
    assert_error(result, "fit", str(expected.value))
    assert not (tmp_path / "m.joblib").exists()


def test_file_that_is_not_a_model(work, tmp_path):
    result = run("score", "--model", work["dir"] / "data.csv", work["dir"] / "data.csv",
                 cwd=tmp_path)
    assert_error(result, "score", "data.csv: not a model file saved by 'flowpca fit'")


def test_missing_output_directory_fails_before_fitting(work, tmp_path):
    result = run("fit", work["dir"] / "data.csv", "--out", "no/such/dir/m.joblib",
                 cwd=tmp_path)
    assert_error(result, "fit", "directory 'no/such/dir' does not exist.")
    assert "Fitted" not in result.stdout


def test_malformed_command_line_exits_2(tmp_path):
    result = run("fit", "data.csv", "--max-iter", "many", "--out", "m.joblib", cwd=tmp_path)
    assert result.returncode == 2
    assert "argument --max-iter: invalid int value: 'many'" in result.stderr


# ------------------------------------------------------------------------ demo
def _figure_path(stdout):
    match = re.search(r"^Figure: (.+)$", stdout, re.MULTILINE)
    return Path(match.group(1)) if match else None


def _assert_table(stdout):
    assert re.search(r"^method\s+\|rho\| factor 1\s+\|rho\| factor 2\s+test log-lik\.\s+"
                     r"fit s$", stdout, re.MULTILINE)
    for method in ("PCA", "Isomap \\(10 neighbours\\)", "NormalizingFlowPCA"):
        assert re.search(rf"^{method}\s+[01]\.\d{{3}}\s+[01]\.\d{{3}}\s+(-?\d+\.\d{{3}}|n/a)"
                         r"\s+\d+\.\d$", stdout, re.MULTILINE), method


def test_demo_prints_the_table_and_writes_the_figure(tmp_path):
    result = run("demo", "--quick", "--out", "figures", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    _assert_table(result.stdout)
    path = _figure_path(result.stdout)
    assert path == (tmp_path / "figures" / "flowpca_demo.png").resolve()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_without_matplotlib_still_prints_the_table(tmp_path):
    block_matplotlib = ("import sys; sys.modules['matplotlib'] = None; "
                        "from flowpca._cli import main; sys.exit(main(sys.argv[1:]))")
    result = run("demo", "--quick", "--no-progress", cwd=tmp_path,
                 python_code=block_matplotlib)
    assert result.returncode == 0, result.stderr
    _assert_table(result.stdout)
    assert 'pip install "flowpca[plot]"' in result.stdout
    assert _figure_path(result.stdout) is None
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------ in-process
def _error(capsys, argv, status=1):
    assert main([str(a) for a in argv]) == status
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.mark.parametrize("name, content, message", [
    ("ragged.csv", "1,2,3\n4,5\n", "ragged.csv: line 2 has 2 values, but line 1 has 3."),
    ("header.csv", "a,b\n1,2,3\n", "header.csv: line 2 has 3 values, but the header has 2."),
    ("empty.csv", "a,b,c\n\n", "empty.csv: no data rows."),
    ("blank.csv", "1,2,3\n4, ,6\n", "blank.csv: column 2 has a missing value at line 2."),
    ("named.csv", "x,name\n1,ann\n", "named.csv: column 2 ('name') is not numeric ('ann') "
                                     "at line 2."),
])
def test_csv_reader_errors(name, content, message, tmp_path, capsys):
    write_csv(tmp_path / name, content)
    assert _error(capsys, ["fit", tmp_path / name, "--out", tmp_path / "m.joblib"]) == (
        f"flowpca fit: error: {tmp_path / name}{message[len(name):]}")


def test_csv_reader_header_blank_lines_and_spaces(tmp_path):
    write_csv(tmp_path / "ok.csv", "\ufeffa, b\n\n 1.5 ,2e3\n-3,4\n")
    np.testing.assert_array_equal(read_array(tmp_path / "ok.csv"), [[1.5, 2000.0], [-3, 4]])


@pytest.mark.parametrize("array, message", [
    (np.arange(4.0), "expected a 2-D array (n_samples, n_features), got shape (4,)."),
    (np.array([["a", "b"]]), "holds <U1 values, not real numbers."),
    (np.array([[1.0, 2.0], [np.inf, 0.0]]), "contains inf at row 1, column 0 (0-based)"),
])
def test_npy_reader_errors(array, message, tmp_path, capsys):
    np.save(tmp_path / "x.npy", array)
    line = _error(capsys, ["fit", tmp_path / "x.npy", "--out", tmp_path / "m.joblib"])
    assert line.startswith(f"flowpca fit: error: {tmp_path / 'x.npy'}: ") and message in line


def test_npy_reader_rejects_objects_and_garbage(tmp_path, capsys):
    np.save(tmp_path / "objects.npy", np.array([[1, None]], dtype=object))
    assert "holds Python objects" in _error(
        capsys, ["fit", tmp_path / "objects.npy", "--out", tmp_path / "m.joblib"])
    (tmp_path / "garbage.npy").write_bytes(b"not numpy")
    assert "not a valid .npy file" in _error(
        capsys, ["fit", tmp_path / "garbage.npy", "--out", tmp_path / "m.joblib"])


def test_npz_reader_keys(tmp_path, capsys):
    np.savez(tmp_path / "two.npz", train=np.ones((3, 2)), test=np.zeros((3, 2)))
    assert "holds 2 arrays (train, test); choose one with --key NAME." in _error(
        capsys, ["fit", tmp_path / "two.npz", "--out", tmp_path / "m.joblib"])
    assert "has no array 'val'; it holds train, test." in _error(
        capsys, ["fit", tmp_path / "two.npz", "--key", "val", "--out", tmp_path / "m"])
    np.testing.assert_array_equal(read_array(tmp_path / "two.npz", key="test"),
                                  np.zeros((3, 2)))
    np.savez(tmp_path / "one.npz", anything=np.ones((3, 2)))
    np.testing.assert_array_equal(read_array(tmp_path / "one.npz"), np.ones((3, 2)))


def test_model_file_errors(work, tmp_path, capsys):
    data = work["dir"] / "data.csv"
    assert _error(capsys, ["transform", "--model", tmp_path / "none.joblib", data]) == (
        f"flowpca transform: error: {tmp_path / 'none.joblib'}: no such file.")
    joblib.dump(PCA(), tmp_path / "pca.joblib")
    assert _error(capsys, ["transform", "--model", tmp_path / "pca.joblib", data]).endswith(
        "pca.joblib: holds a PCA, not a NormalizingFlowPCA.")
    joblib.dump(NormalizingFlowPCA(flow="mlp"), tmp_path / "unfitted.joblib")
    assert "This NormalizingFlowPCA instance is not fitted yet" in _error(
        capsys, ["transform", "--model", tmp_path / "unfitted.joblib", data])


def test_estimator_messages_for_inverse_sample_and_flow(work, capsys):
    model = work["dir"] / "linear.joblib"
    assert _error(capsys, ["inverse", "--model", model, work["dir"] / "data.npy"]) == (
        "flowpca inverse: error: X has 3 features, but NormalizingFlowPCA expects 2 "
        "components as input.")
    with pytest.raises(ValueError) as expected:
        joblib.load(model).sample(0)
    assert _error(capsys, ["sample", "--model", model, "--n-samples", 0]) == (
        f"flowpca sample: error: {expected.value}")
    assert "The 'flow' parameter of NormalizingFlowPCA must be" in _error(
        capsys, ["fit", work["dir"] / "data.csv", "--flow", "nope", "--out",
                 work["dir"] / "never.joblib"])


def test_unsupported_output_type_fails_before_loading(work, capsys):
    assert _error(capsys, ["transform", "--model", work["dir"] / "missing.joblib",
                           work["dir"] / "data.csv", "--out", "y.txt"]) == (
        "flowpca transform: error: y.txt: unsupported output type '.txt'; use .csv, .npy "
        "or .npz.")


def test_progress_without_tqdm_says_how_to_get_it(work, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes ``import tqdm`` fail
    assert main(["fit", str(work["dir"] / "data.csv"), "--flow", "linear", "--progress",
                 "--out", str(tmp_path / "m.joblib")]) == 0
    assert capsys.readouterr().err == (
        'flowpca: warning: no progress bar without tqdm: pip install "flowpca[progress]"\n')
    assert isinstance(joblib.load(tmp_path / "m.joblib"), NormalizingFlowPCA)


def test_skops_output_without_skops_fails_before_fitting(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "skops", None)
    monkeypatch.setitem(sys.modules, "skops.io", None)
    # Checked before the data are even read (the data file here does not exist).
    assert _error(capsys, ["fit", tmp_path / "absent.csv", "--out", tmp_path / "m.skops"]) == (
        'flowpca fit: error: .skops model files need skops: pip install "flowpca[persist]" '
        "(or save to a .joblib file).")
