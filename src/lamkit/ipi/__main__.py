"""``python -m lamkit.ipi``: the same as ``lam ipi``."""

import sys

from ..cli.main import main

if __name__ == "__main__":
    sys.exit(main(["ipi", *sys.argv[1:]]))
