"""``python -m mlops_ops.cli``: the same command as the ``mlops-ops`` console script."""

from __future__ import annotations

from mlops_ops.cli import main

main()
