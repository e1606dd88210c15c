"""JSON arguments (``--spec``, ``--conf``), inline or ``@path``, read within the limits of ``mlops_ops.settings``."""

from __future__ import annotations

import json
from typing import Any

from mlops_ops.errors import SpecError


def load_json(value: str, what: str) -> Any:
    """Parse a JSON argument, inline or ``@path``, within the limits of ``mlops_ops.settings``.

    Anything a library would raise on hostile input (bad UTF-8, a huge number, nesting deeper than the
    interpreter's recursion limit) becomes a SpecError, so a bad spec always ends with exit code 2.
    """
    from mlops_ops.settings import MAX_SPEC_BYTES, MAX_SPEC_DEPTH

    text = _read_spec_file(value[1:], what) if value.startswith("@") else value
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:  # argv bytes that are not UTF-8 arrive as lone surrogates
        raise SpecError(f"{what} is not valid UTF-8 (at character {exc.start}); pass UTF-8 text") from None
    if size > MAX_SPEC_BYTES:
        raise SpecError(f"{what} is {size} bytes, more than the {MAX_SPEC_BYTES} a spec may have")
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise SpecError(
            f"{what} nests lists and objects too deeply to parse; at most {MAX_SPEC_DEPTH} levels"
        ) from None
    except ValueError as exc:  # an integer of more than 4300 digits, NaN or Infinity
        raise SpecError(f"{what} is not valid JSON ({exc})") from None
    _check_values(data, what)
    return data


def _read_spec_file(path: str, what: str) -> str:
    from mlops_ops.settings import MAX_SPEC_BYTES

    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SPEC_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise SpecError(f"cannot read {what} file {path!r}: {reason}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"{what} file {path!r} is larger than the {MAX_SPEC_BYTES} bytes a spec may have")
    try:
        return data.decode("utf-8-sig")  # a byte-order mark, as some editors write, is allowed
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"{what} file {path!r} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8"
        ) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _check_values(data: Any, what: str) -> None:
    """Refuse nesting deeper than MAX_SPEC_DEPTH, and strings no file, URI or name can hold."""
    from mlops_ops.settings import MAX_SPEC_DEPTH

    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise SpecError(f"{what} has a string with a NUL character (\\u0000); no field accepts one")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise SpecError(
                    f"{what} has a string with a lone surrogate (\\ud800-\\udfff), which is not text"
                ) from None
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_SPEC_DEPTH:
            raise SpecError(f"{what} nests lists and objects more than {MAX_SPEC_DEPTH} levels deep")
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        stack.extend((item, depth + 1) for item in items)
