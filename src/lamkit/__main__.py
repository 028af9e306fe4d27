"""``python -m lamkit ...`` is ``lam ...`` (used with ``torchrun -m lamkit train ...``)."""

from .cli.main import main

raise SystemExit(main())
