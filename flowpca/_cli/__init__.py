"""The command line ``flowpca`` (``python -m flowpca``): argument parsing in
:mod:`.parser`, the subcommands in :mod:`.commands` and :mod:`.demo`, files in :mod:`.io`.

Errors the user can fix (files, data, parameter values) are printed as one line on
standard error, with exit status 1; warnings as one line each.
"""

import sys
import warnings

from .. import _progress
from .errors import CommandError
from .parser import build_parser

# What a user can fix: bad files and data (CommandError, OSError) and values the estimator
# rejects (ValueError, which includes scikit-learn's InvalidParameterError and
# NotFittedError). Anything else is a bug and keeps its traceback.
_USER_ERRORS = (CommandError, OSError, ValueError, FloatingPointError)


def main(argv=None):
    """Run the command line.

    Parameters
    ----------
    argv : list of str or None, default=None
        Arguments without the program name; None reads ``sys.argv``.

    Returns
    -------
    status : int
        0 on success, 1 on an error in the input, 130 when interrupted (argparse exits
        with 2 on a malformed command line).
    """
    args = build_parser().parse_args(argv)
    progress = getattr(args, "progress", None)
    if progress is None:
        progress = sys.stderr.isatty()
    elif progress and not _progress.tqdm_available():
        print('flowpca: warning: no progress bar without tqdm: pip install '
              '"flowpca[progress]"', file=sys.stderr)
    with warnings.catch_warnings(), _progress.progress_bars(progress):
        warnings.showwarning = _show_warning
        try:
            return args.run(args)
        except _USER_ERRORS as error:
            print(f"flowpca {args.command}: error: {_one_line(error)}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"flowpca {args.command}: interrupted", file=sys.stderr)
            return 130


def _one_line(error):
    text = str(error) if str(error) else type(error).__name__
    if isinstance(error, OSError) and error.filename is not None:
        text = f"{error.filename}: {error.strerror or text}"
    return " ".join(text.split())


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"flowpca: {category.__name__}: {_one_line(message)}", file=sys.stderr)
