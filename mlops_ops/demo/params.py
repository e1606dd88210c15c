"""A DAG's trigger form (its Params), read once and cached, and a run's ``--conf`` checked against it.

Reading ``dag.params`` means importing Airflow and the DAG file (5-8 s here), so it runs in a child
process of this virtualenv and the result is kept in the demo's cache folder, shared by every home
(:func:`mlops_ops.demo.embedded.cache_folder`), keyed by the DAG file's bytes, the Airflow version and the
state of the ``mlops_ops`` sources the forms are built from (``pipelines``, ``specs``, the demo's paths).
A later check of a conf, in any home, then takes a few milliseconds.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_ops.errors import InfraError, SpecError

# Runs in the child process: load the DAG file by path and print each Param's default, schema and title.
_LOADER = """
import importlib.util, json, sys
from airflow.sdk import DAG
path, dag_id = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location("_mlops_demo_dag", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
dags = [v for v in vars(module).values() if isinstance(v, DAG) and v.dag_id == dag_id]
if not dags:
    sys.exit(f"no DAG {dag_id!r} in {path}")
params = dags[0].params
out = {}
for key in params.keys():
    param = params.get_param(key)
    out[key] = {"default": param.value, "schema": param.schema, "description": param.description}
print(json.dumps(out, default=str))
"""


@dataclass(frozen=True)
class Field:
    """One field of a DAG's trigger form."""

    name: str
    default: Any
    schema: dict[str, Any]
    description: str | None = None

    @property
    def title(self) -> str:
        return str(self.schema.get("title") or self.name)

    def expected(self) -> str:
        """What the field accepts, in words: ``a number``, ``one of a, b``."""
        if "enum" in self.schema:
            return "one of " + ", ".join(json.dumps(v) for v in self.schema["enum"])
        kind = self.schema.get("type")
        kinds = kind if isinstance(kind, list) else [kind] if kind else []
        words = " or ".join(_ARTICLE.get(str(k), str(k)) for k in kinds) or "any JSON value"
        if "pattern" in self.schema:
            words += f" matching {self.schema['pattern']}"
        bounds = [f"{op} {self.schema[k]}" for k, op in (("minimum", ">="), ("maximum", "<=")) if k in self.schema]
        return words + (f" {' and '.join(bounds)}" if bounds else "")


_ARTICLE = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "object": "a JSON object",
    "array": "a JSON array",
    "null": "null",
}


#: The ``mlops_ops`` folders the DAGs build their forms from (``mlops_ops.pipelines.forms`` and what it reads).
_FORM_SOURCES = ("pipelines/*.py", "specs/*.py", "demo/__init__.py")


def _cache_key(dag_file: Path) -> str:
    """Changes when the DAG file, the Airflow version or a source the forms are built from changes."""
    from importlib.metadata import version

    import mlops_ops

    digest = hashlib.sha256(dag_file.read_bytes())
    digest.update(version("apache-airflow").encode())
    package = Path(mlops_ops.__file__).parent
    for source in sorted(p for pattern in _FORM_SOURCES for p in package.glob(pattern)):
        stat = source.stat()
        digest.update(f"{source}:{stat.st_mtime_ns}:{stat.st_size}".encode())
    return digest.hexdigest()


def load_fields(dag_file: Path, dag_id: str, env: dict[str, str], cache_dir: Path) -> dict[str, Field]:
    """The fields of ``dag_id``'s form in ``dag_file``, from the cache or a child process that imports the DAG."""
    key = _cache_key(dag_file)
    cache = cache_dir / f"params-{dag_id}-{key[:16]}.json"
    raw: dict[str, Any] | None = None
    with contextlib.suppress(OSError, ValueError, KeyError):  # absent, unreadable or cut short: read it again
        stored = json.loads(cache.read_text())
        raw = stored["params"] if stored.get("key") == key else None
    if raw is None:
        done = subprocess.run(
            [sys.executable, "-c", _LOADER, str(dag_file), dag_id],
            env=env, capture_output=True, text=True, check=False, timeout=300,
        )  # fmt: skip
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise InfraError(f"cannot read the params of {dag_id} from {dag_file}: {last}")
        raw = json.loads(done.stdout.strip().splitlines()[-1])
        with contextlib.suppress(OSError):  # a read-only cache only costs the next run this child process
            cache_dir.mkdir(parents=True, exist_ok=True)
            partial = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
            partial.write_text(json.dumps({"key": key, "params": raw}, indent=1))
            os.replace(partial, cache)  # whole or not at all, for demos running at once
    return {name: Field(name, item["default"], item["schema"], item.get("description")) for name, item in raw.items()}


def parse_conf(text: str) -> dict[str, Any]:
    """``--conf`` as a JSON object, or a SpecError that says what is wrong with it."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(
            f"--conf is not valid JSON ({exc.msg} at column {exc.colno}); "
            """give an object, e.g. --conf '{"target": "species"}'"""
        ) from None
    if not isinstance(value, dict):
        raise SpecError(
            f"--conf must be a JSON object of form fields, not {type(value).__name__} {text.strip()[:60]}; "
            """e.g. --conf '{"target": "species"}'"""
        )
    return value


def check_conf(conf: dict[str, Any], fields: dict[str, Field], dag_id: str) -> None:
    """Refuse an unknown key (with the nearest known one) or a value its field's schema does not accept."""
    import jsonschema

    for key, value in conf.items():
        if key not in fields:
            near = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise SpecError(f"--conf has an unknown key {key!r}: {hint}{dag_id} accepts {', '.join(fields)}")
        field = fields[key]
        try:
            jsonschema.validate(value, field.schema)
        except jsonschema.ValidationError:
            raise SpecError(
                f"--conf key {key!r} ({field.title}) must be {field.expected()}, not {json.dumps(value)[:80]}"
            ) from None


def describe(fields: dict[str, Field]) -> str:
    """The form's fields, one a line: name, what it accepts, default (and what an empty default or a switch means)."""
    width = max((len(name) for name in fields), default=0)
    lines = []
    for name, field in fields.items():
        line = f"{name:<{width}}  {field.expected()}; default {json.dumps(field.default)}"
        if (field.default in ("", None) or isinstance(field.default, bool)) and field.description:
            line += f" ({field.description})"
        lines.append(line)
    return "\n".join(lines)
