"""The ``optbench`` command's entry point (``[project.scripts]`` in pyproject.toml).

``optbench demo`` starts its worker here, before importing the command line
(services/children.py says why); every other command goes straight to ``services.cli``.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["demo"] and not {"-h", "--help"} & set(args):
        from services.children import DEMO_WORKER_ARGS, start_early

        start_early(*DEMO_WORKER_ARGS)
    from services.cli import main as cli_main

    return cli_main(argv)
