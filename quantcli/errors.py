"""The exception hierarchy: every error quantcli raises on purpose derives from QuantCliError.

Each class carries the process exit code of the CLI contract (``docs/cli.md``):

* 1 -- a gate or a check failed (validation gate, parity, drift, promotion refused, integrity).
* 2 -- bad input or usage (a file, a row, an option), or a resource that is busy or missing.
* 3 -- :data:`EXIT_CRASH`: anything else, a bug (the CLI prints its type and first line, and the
  traceback with ``--debug``); never 1, which cron and CI read as a failed check.

Subclasses also inherit the builtin a caller would naturally catch (``ValueError``,
``KeyError``, ``ImportError``), so library users need not know quantcli's names.
"""

from __future__ import annotations

#: The exit code of an unexpected error: not a failed check (1), not bad input (2).
EXIT_CRASH = 3


class QuantCliError(Exception):
    """Root of all quantcli errors. ``hint`` is an optional second line naming what would work."""

    exit_code: int = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InputError(QuantCliError, ValueError):
    """Bad input data or options (exit code 2). The message names the file, row or option."""

    exit_code = 2


class DataValidationError(InputError):
    """Input bars failed a data-quality check of severity ``error`` (exit code 2).

    ``issues`` holds the structured findings (check, file, line, column, message).
    """

    def __init__(self, message: str, *, issues: list | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.issues = issues or []


class NotFoundError(QuantCliError, KeyError):
    """A named thing (table, symbol, model, version, alias, feature set) does not exist."""

    exit_code = 2

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class StoreBusyError(QuantCliError, RuntimeError):
    """Another process holds the offline store's write lock (exit code 2)."""

    exit_code = 2


class MissingDependencyError(QuantCliError, ImportError):
    """An optional package is not installed; the message says what to install (exit code 2)."""

    exit_code = 2


class GateFailedError(QuantCliError):
    """A gate or check failed: validation gate, parity, drift, promotion refused (exit code 1).

    ``reasons`` lists every failed criterion; ``result`` is the JSON-able result, if any.
    """

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        reasons: list[str] | None = None,
        result: dict | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.reasons = reasons or []
        self.result = result


class IntegrityError(QuantCliError):
    """An artifact or record failed verification: sha256, signature, hash chain (exit code 1)."""

    exit_code = 1


__all__ = [
    "DataValidationError",
    "GateFailedError",
    "InputError",
    "IntegrityError",
    "MissingDependencyError",
    "NotFoundError",
    "QuantCliError",
    "StoreBusyError",
]
