"""``python -m services.cli``: the ``optbench`` command."""

from services.cli import main

raise SystemExit(main())
