"""The top-level guard of every command: any error ends as one bounded line on stderr and an exit code."""

from __future__ import annotations

import re
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import click

from mlops_ops.errors import ERROR_PREFIX, MlopsError

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    """Turn every error into one bounded line on stderr and an exit code (the top-level guard of a command).

    Our errors exit with their own code. Anything else is a bug: it exits 1 with the exception's type and
    message, and its traceback is printed only with ``--verbose``.
    """

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MlopsError as exc:
            click.echo(_error_line(f"{type(exc).__name__}: ", _text(exc)), err=True)
            sys.exit(exc.exit_code)
        except click.ClickException:
            raise
        except Exception as exc:  # the guard: an exception no step turned into one of ours is a bug
            verbose = bool(kwargs.get("verbose"))
            if verbose:
                traceback.print_exc(file=sys.stderr)
            hint = "" if verbose or "verbose" not in kwargs else "; rerun with --verbose for the traceback"
            line = _error_line(f"{type(exc).__name__}: ", _text(exc), f" (unexpected, a bug in mlops-ops{hint})")
            click.echo(line, err=True)
            sys.exit(1)

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper  # type: ignore[return-value]


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # an exception whose __str__ fails must not hide the original one
        return "(the message could not be printed)"


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _error_line(kind: str, message: str, suffix: str = "") -> str:
    """``mlops-ops: error: KIND MESSAGE SUFFIX`` on one line of at most MAX_ERROR_LINE characters.

    Whitespace runs (newlines too) become one space, other control characters are escaped, and a long
    message is cut with an ellipsis and the count of characters cut.
    """
    from mlops_ops.settings import MAX_ERROR_LINE

    message = _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", " ".join(message.split()))
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    head = f"{ERROR_PREFIX}{kind}"
    room = MAX_ERROR_LINE - len(head) - len(suffix)
    if len(message) > room:
        room -= 32  # the marker: " … (1234567 more characters)"
        message = f"{message[:room]} … ({len(message) - room} more characters)"
    return f"{head}{message}{suffix}"
