"""Reading and writing the command line's files: data arrays (CSV, NPY, NPZ) and models
(joblib, skops).

Every problem with a file or its contents raises :class:`CommandError` with a message that
names the file and, for data, the column and line (CSV) or index (NPY, NPZ) at fault.
"""

import csv
import sys
import zipfile
from pathlib import Path

import numpy as np

from .._estimator import NormalizingFlowPCA
from .errors import CommandError

DATA_SUFFIXES = (".csv", ".npy", ".npz")
# The only type a model file may ask skops to trust.
_TRUSTED_SKOPS_TYPES = {"flowpca._estimator.NormalizingFlowPCA"}


# ---------------------------------------------------------------------------- reading
def read_array(path, key=None):
    """Read a 2-D array of finite numbers.

    Parameters
    ----------
    path : str or Path
        A ``.csv`` file (comma-separated; a first line with no number in it is a header
        of column names), a ``.npy`` file or a ``.npz`` file.
    key : str or None, default=None
        Name of the array in a ``.npz`` file: by default ``X``, or its only array.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), dtype float64
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise CommandError(f"{path}: unsupported file type {suffix or '(none)'!r}; use "
                           ".csv, .npy or .npz.")
    if not path.is_file():
        raise CommandError(f"{path}: no such file.")
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".npy":
        return _read_npy(path)
    return _read_npz(path, key)


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path):
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            rows = [(reader.line_num, row) for row in reader if any(f.strip() for f in row)]
    except (UnicodeDecodeError, csv.Error) as error:
        raise CommandError(f"{path}: not a readable CSV text file ({error}).") from None
    names = None
    if rows and not any(_is_number(field) for field in rows[0][1]):
        names = [field.strip() for field in rows[0][1]]
        rows = rows[1:]
    if not rows:
        raise CommandError(f"{path}: no data rows.")
    n_columns = len(names) if names is not None else len(rows[0][1])
    for line, row in rows:
        if len(row) != n_columns:
            raise CommandError(f"{path}: line {line} has {len(row)} values, but "
                               f"{'the header' if names else f'line {rows[0][0]}'} has "
                               f"{n_columns}.")
    lines = [line for line, _ in rows]
    text = np.array([row for _, row in rows], dtype=str)
    X = np.empty(text.shape)
    for j in range(n_columns):
        try:
            X[:, j] = text[:, j].astype(np.float64)
        except ValueError:
            i = next(i for i, field in enumerate(text[:, j]) if not _is_number(field))
            field = str(text[i, j])
            what = ("has a missing value" if not field.strip()
                    else f"is not numeric ({field!r})")
            raise CommandError(f"{path}: column {_column(j, names)} {what} at line "
                               f"{lines[i]}.") from None
    bad = np.argwhere(~np.isfinite(X))
    if bad.size:
        i, j = bad[0]
        raise CommandError(f"{path}: column {_column(j, names)} contains "
                           f"{_non_finite(X[i, j])} at line {lines[i]}; the data must be "
                           "finite numbers.")
    return X


def _non_finite(value):
    return "NaN" if np.isnan(value) else ("-inf" if value < 0 else "inf")


def _column(j, names):
    """1-based column number, with its name when there is a header."""
    return f"{j + 1} ({names[j]!r})" if names else f"{j + 1}"


def _read_npy(path):
    try:
        with open(path, "rb") as file:
            array = np.lib.format.read_array(file, allow_pickle=False)
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise CommandError(f"{path}: holds Python objects; only numeric arrays can be "
                               "read.") from None
        raise CommandError(f"{path}: not a valid .npy file ({error}).") from None
    return _numeric_2d(array, str(path))


def _read_npz(path, key):
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if key is None:
                if "X" in names or len(names) == 1:
                    key = "X" if "X" in names else names[0]
                else:
                    raise CommandError(
                        f"{path}: holds {len(names)} arrays ({', '.join(names) or 'none'}); "
                        "choose one with --key NAME.")
            elif key not in names:
                raise CommandError(f"{path}: has no array {key!r}; it holds "
                                   f"{', '.join(names) or 'none'}.")
            array = archive[key]
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        if "allow_pickle" in str(error):
            raise CommandError(f"{path}: array {key!r} holds Python objects; only numeric "
                               "arrays can be read.") from None
        raise CommandError(f"{path}: not a valid .npz file ({error}).") from None
    return _numeric_2d(array, f"{path}[{key!r}]")


def _numeric_2d(array, where):
    if array.ndim != 2:
        raise CommandError(f"{where}: expected a 2-D array (n_samples, n_features), got "
                           f"shape {array.shape}.")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
            or array.dtype == bool):
        raise CommandError(f"{where}: holds {array.dtype} values, not real numbers.")
    array = array.astype(np.float64)
    bad = np.argwhere(~np.isfinite(array))
    if bad.size:
        i, j = bad[0]
        raise CommandError(f"{where}: contains {_non_finite(array[i, j])} at row {i}, "
                           f"column {j} (0-based); the data must be finite numbers.")
    return array


# ---------------------------------------------------------------------------- writing
def check_output(path, suffixes):
    """Fail early (before any long computation) on an output path that cannot be
    written: an unsupported suffix or a missing directory.

    Parameters
    ----------
    path : str, Path or None
        None means standard output.
    suffixes : tuple of str or None
        Accepted file name endings; None accepts any.
    """
    if path is None:
        return
    path = Path(path)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise CommandError(f"{path}: unsupported output type {path.suffix or '(none)'!r}; "
                           f"use {', '.join(suffixes[:-1])} or {suffixes[-1]}.")
    if not path.parent.is_dir():
        raise CommandError(f"{path}: directory {str(path.parent)!r} does not exist.")
    if path.is_dir():
        raise CommandError(f"{path}: is a directory; give a file name.")


def write_array(path, array, columns):
    """Write a 2-D array as CSV (a header of column names; 17 significant digits, so that
    values read back exactly), NPY, or NPZ (as array ``X``).

    Parameters
    ----------
    path : str, Path or None
        Output file; None writes CSV to standard output.
    array : ndarray of shape (n_samples, n_columns)
    columns : sequence of str
        Column names for the CSV header.
    """
    check_output(path, DATA_SUFFIXES)
    header = ",".join(columns)
    if path is None:
        np.savetxt(sys.stdout, array, delimiter=",", header=header, comments="",
                   fmt="%.17g")
        return
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        np.savetxt(path, array, delimiter=",", header=header, comments="", fmt="%.17g")
    elif suffix == ".npy":
        np.save(path, array)
    else:
        np.savez(path, X=array)


# ---------------------------------------------------------------------------- models
def check_model_output(path):
    """Fail early on a model path that :func:`save_model` cannot write (a missing
    directory, or ``.skops`` without skops installed).

    Parameters
    ----------
    path : str or Path
    """
    check_output(path, None)
    if Path(path).suffix.lower() == ".skops":
        _skops()


def save_model(model, path):
    """Save a fitted estimator: with skops for a ``.skops`` path, else with joblib.

    Parameters
    ----------
    model : NormalizingFlowPCA
    path : str or Path
    """
    path = Path(path)
    if path.suffix.lower() == ".skops":
        _skops().dump(model, path)
    else:
        import joblib

        joblib.dump(model, path)


def load_model(path):
    """Load an estimator saved by :func:`save_model` (or by ``joblib.dump`` /
    ``skops.io.dump`` in Python).

    A ``.skops`` file is loaded trusting only flowpca's estimator class; any other file
    is unpickled by joblib, which can run code: load only joblib files you trust.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    model : NormalizingFlowPCA
    """
    path = Path(path)
    if not path.is_file():
        raise CommandError(f"{path}: no such file.")
    if path.suffix.lower() == ".skops":
        sio = _skops()
        try:
            untrusted = set(sio.get_untrusted_types(file=path))
            if not untrusted <= _TRUSTED_SKOPS_TYPES:
                raise CommandError(f"{path}: refusing to load types other than flowpca's "
                                   f"estimator: {', '.join(sorted(untrusted))}.")
            model = sio.load(path, trusted=sorted(untrusted))
        except CommandError:
            raise
        except Exception as error:  # a corrupt or foreign file fails in many ways
            raise CommandError(f"{path}: not a readable skops model file "
                               f"({type(error).__name__}: {error}).") from None
    else:
        import joblib

        try:
            model = joblib.load(path)
        except Exception as error:  # unpickling arbitrary bytes fails in many ways
            raise CommandError(f"{path}: not a model file saved by 'flowpca fit' "
                               f"({type(error).__name__}: {error}).") from None
    if not isinstance(model, NormalizingFlowPCA):
        raise CommandError(f"{path}: holds a {type(model).__name__}, not a "
                           "NormalizingFlowPCA.")
    return model


def _skops():
    try:
        import skops.io
    except ImportError:
        raise CommandError('.skops model files need skops: pip install "flowpca[persist]" '
                           "(or save to a .joblib file).") from None
    return skops.io
