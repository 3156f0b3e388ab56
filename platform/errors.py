"""Errors a user can cause, and how every command reports them: one line, a non-zero exit.

Used by every entry point, e.g. ``python -m platform.run asl --data /no/such/dir``.
"""

from __future__ import annotations

import functools
import re
import sys
import traceback
from collections.abc import Callable

# Ray Data keeps a UDF's exception only as text in its own error's traceback.
_REMOTE_USER_ERROR = re.compile(r"^platform\.errors\.UserError: (.+)$", re.MULTILINE)


class UserError(Exception):
    """Bad input (unknown stem, bad --set, malformed data...): its message is the whole report."""


def find_user_error(exc: BaseException | None) -> UserError | None:
    """The UserError behind ``exc``, through Ray's wrappers (task, Data and Train errors)."""
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, UserError):
            return current
        pending += [current.__cause__, current.__context__, getattr(current, "cause", None)]
        # Ray Train keeps worker errors in dicts or lists on its own exception types.
        for attr in ("worker_failures", "errors", "error"):
            held = getattr(current, attr, None)
            if isinstance(held, dict):
                pending += [e for e in held.values() if isinstance(e, BaseException)]
            elif isinstance(held, (list, tuple)):
                pending += [e for e in held if isinstance(e, BaseException)]
            elif isinstance(held, BaseException):
                pending.append(held)
    found = _REMOTE_USER_ERROR.search(str(exc)) if exc is not None else None
    return UserError(found.group(1)) if found else None


# A URL's user:password@ part (up to the last @ of the URL: a password may hold / or @).
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^\s'\"<>]*@")


def redacted(text: str) -> str:
    """``text`` with the ``user:password@`` of every URL in it shown as ``***@``: error lines and
    tracebacks quote URLs (MLflow's client names the one it called), and a credential in one must
    reach no terminal and no file."""
    return _URL_CREDENTIALS.sub(r"\1***@", text)


def exit_on_user_error(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a command's ``main``: a UserError anywhere inside becomes ``error: ...`` and exit 2."""

    @functools.wraps(main)  # keeps the raising ``main`` as ``__wrapped__`` for the Python API
    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except Exception as exc:  # noqa: BLE001 - re-raised unless it hides a user error
            user_error = find_user_error(exc)
            if user_error is None:  # a bug's traceback, as Python prints it, but for credentials in URLs
                sys.stderr.write(redacted("".join(traceback.format_exception(exc))))
                return 1
            # One line whatever the message quotes (a path or a cell holding a line break).
            print("error: " + redacted(str(user_error)).replace("\r", "\\r").replace("\n", "\\n"), file=sys.stderr)
            return 2

    return wrapped
