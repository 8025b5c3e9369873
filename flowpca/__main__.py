"""Command line: ``python -m flowpca`` or ``flowpca`` (see ``flowpca --help``)."""

import sys

from ._cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
