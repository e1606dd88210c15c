"""``python -m mlops_ops.devstack``: the services of a team install on loopback (what ``make services`` runs)."""

from __future__ import annotations

if __name__ == "__main__":
    from mlops_ops.devstack.stack import main

    main()
