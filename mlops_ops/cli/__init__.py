"""The ``mlops-ops`` command line: the container entrypoint of every step, plus the user commands.

``mlops-ops step NAME --spec JSON|@file`` is exactly what the local runner and a Kubernetes pod run.
Progress goes to stderr; the result manifest goes to stdout as JSON (and to ``--result`` if given).
A user's mistake ends with one line on stderr and an exit code from ``mlops_ops.errors``.

- :mod:`~mlops_ops.cli.app`: the ``mlops-ops`` group, assembled from the modules below;
- :mod:`~mlops_ops.cli.errors`: the guard that turns every error into one line and an exit code;
- :mod:`~mlops_ops.cli.console`: logging to stderr and keeping stdout for the result;
- :mod:`~mlops_ops.cli.json_input`: JSON arguments (inline or ``@path``) read within the spec limits;
- :mod:`~mlops_ops.cli.step`: ``step`` and ``steps``;
- :mod:`~mlops_ops.cli.models`: ``lineage``, ``history`` and ``rollback`` of registered models;
- :mod:`~mlops_ops.cli.pipeline`: ``pipeline lint|schema|init`` and ``run`` of YAML pipelines;
- :mod:`~mlops_ops.cli.suite`: ``suite infer``.

Every module imports only click and light parts of the package: a command imports its heavy libraries
when it runs, so ``mlops-ops step ...`` starts fast.
"""

from __future__ import annotations

from mlops_ops.cli.app import main

__all__ = ["main"]
