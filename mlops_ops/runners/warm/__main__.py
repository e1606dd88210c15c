"""``python -m mlops_ops.runners.warm``: run a warm parent (see :func:`mlops_ops.runners.warm.parent.main`)."""

from __future__ import annotations

from mlops_ops.runners.warm.parent import main

if __name__ == "__main__":
    main()
