"""Reading a pipeline file: YAML with the line and column of every key and value, and one-line problems.

A :class:`Problem` is ``file:line:col: field.path: message``, the format of ``mlops-ops pipeline lint``,
of the Airflow import error and of :class:`PipelineFileError`. Positions are 1-based, like an editor's.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_ops.errors import SpecError

Loc = tuple[str | int, ...]
#: Largest pipeline file read, in bytes: a pipeline is a screenful, not a data set.
MAX_FILE_BYTES = 256 * 1024


@dataclass(frozen=True)
class Problem:
    """One mistake in a pipeline file, where it is and what was expected."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        at = f"{self.file}:{self.line}:{self.column}" if self.line else self.file  # line 0: not from a file
        return f"{at}: {where}{self.message}"


class PipelineFileError(SpecError):
    """A pipeline file is invalid: its problems, each ``file:line:col: field: message``."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.column))
        problems = self.problems
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{problems[0]}{more}")


def dotted(loc: Loc) -> str:
    """``('gates', 0, 'metric')`` as ``gates[0].metric``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class Document:
    """A parsed pipeline file: plain data, and (read when an error needs it) where each node was written."""

    file: str
    data: Any
    text: str
    _root: Any = None

    @property
    def root(self) -> Any:
        """ruamel's round-trip tree of the file, which remembers every key's and value's position."""
        if self._root is None:
            self._root = _round_trip(self.text, self.file)
        return self._root

    def position(self, loc: Loc, *, key: bool = False) -> tuple[int, int]:
        """Line and column (1-based) of the node at ``loc``: its value, or its key with ``key=True``.

        A path that goes deeper than the file (a missing key) points at the nearest node that exists.
        """
        node, pos = self.root, (1, 1)
        for index, part in enumerate(loc):
            last = index == len(loc) - 1
            lc = getattr(node, "lc", None)
            if lc is None:
                break
            if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
                line, col = lc.item(part)
                node = node[part]
            elif isinstance(part, str) and isinstance(node, dict) and part in node:
                line, col = lc.key(part) if key and last else _value_or_key(lc, part)
                node = node[part]
            else:
                break
            pos = (line + 1, col + 1)
        return pos

    def problem(self, loc: Loc, message: str, *, key: bool = False) -> Problem:
        line, col = self.position(loc, key=key)
        return Problem(self.file, line, col, dotted(loc), message)


def _value_or_key(lc: Any, key: str) -> tuple[int, int]:
    try:
        found = lc.value(key)
    except (KeyError, TypeError):
        found = None
    return tuple(found) if found and found[0] is not None else lc.key(key)  # type: ignore[return-value]


def read(path: str | Path, display: str | None = None) -> Document:
    """Parse the YAML file at ``path``; a PipelineFileError with the position of invalid YAML.

    The data is read by libyaml (C, about 30 times faster than a pure-Python parser: a folder of files
    is parsed on every DAG processor pass); ruamel.yaml reads the file again only when a problem needs
    a position, and for the message of invalid YAML.
    """
    import yaml

    name = display or str(path)
    try:
        raw = Path(path).read_bytes()[: MAX_FILE_BYTES + 1]
    except OSError as exc:
        raise PipelineFileError([Problem(name, 1, 1, "", f"cannot read the file: {exc.strerror}")]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise PipelineFileError([Problem(name, 1, 1, "", f"the file is larger than {MAX_FILE_BYTES} bytes")])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PipelineFileError([Problem(name, 1, 1, "", f"not UTF-8 text (byte offset {exc.start})")]) from None
    try:
        # _loader() is libyaml's SafeLoader (plus a duplicate-key check): no object construction.
        data = yaml.load(text, Loader=_loader())  # nosec B506
    except yaml.YAMLError:
        _round_trip(text, name)  # raises with ruamel's position and wording
        raise PipelineFileError([Problem(name, 1, 1, "", "invalid YAML")]) from None
    if not isinstance(data, dict):
        raise PipelineFileError([Problem(name, 1, 1, "", "expected a mapping of pipeline settings (key: value)")])
    return Document(name, _plain(data), text)


@functools.cache
def _loader() -> Any:
    """libyaml's safe loader that refuses a key written twice in one mapping (as ruamel.yaml does)."""
    import yaml

    class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen = set()
            for key_node, _ in node.value:
                key = getattr(key_node, "value", None)
                if isinstance(key, str) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark
                    )
                seen.add(key)
            return super().construct_mapping(node, deep)

    return Loader


def _round_trip(text: str, name: str) -> Any:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    yaml = YAML(typ="rt", pure=True)
    try:
        return yaml.load(text)  # nosec B506
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        what = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        opened = exc.context_mark
        if exc.context and opened is not None and mark is not None and opened.line != mark.line:
            what += f" ({' '.join(str(exc.context).split())} at line {opened.line + 1}, column {opened.column + 1})"
        raise PipelineFileError([Problem(name, line, col, "", f"invalid YAML: {what}")]) from None
    except YAMLError as exc:
        raise PipelineFileError([Problem(name, 1, 1, "", f"invalid YAML: {' '.join(str(exc).split())}")]) from None


def _plain(node: Any) -> Any:
    """ruamel's commented containers and scalars as plain dicts, lists, str, int, float and bool."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    for kind in (int, float, str):
        if isinstance(node, kind):
            return kind(node)
    return str(node)  # dates and timestamps: a string, as the field expects


# ------------------------------------------------------------------------------------ pydantic errors

_TYPES = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "list_type": "a list",
}


def describe(value: Any) -> str:
    """What a YAML value is, for 'expected X, got Y'."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"[:120]


def from_validation(doc: Document, errors: list[Any], known: dict[Loc, list[str]]) -> list[Problem]:
    """pydantic's errors as problems at their place in the file, one line each, no pydantic wording."""
    problems = []
    for err in errors:
        loc: Loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        kind, value = err["type"], err.get("input")
        if kind == "extra_forbidden":
            parent, name = loc[:-1], str(loc[-1])
            options = known.get(parent, [])
            close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
            hint = (
                f"; did you mean {close[0]!r}?"
                if close
                else (f"; expected one of {', '.join(options)}" if options else "")
            )
            problems.append(doc.problem(loc, f"unknown key {name!r}{hint}", key=True))
        elif kind == "missing":
            problems.append(doc.problem(loc[:-1], f"missing required key {str(loc[-1])!r}", key=True))
        elif kind in _TYPES:
            problems.append(doc.problem(loc, f"expected {_TYPES[kind]}, got {describe(value)}"))
        elif kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            problems.append(doc.problem(loc, f"expected {expected}, got {describe(value)}"))
        else:
            message = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
            problems.append(doc.problem(loc, message))
    return problems
