"""The ``qcli`` command line: one Typer sub-app per group, a thin shell over the library.

Command bodies parse options, call the library, and render the result. One error handler turns
:class:`quantcli.errors.QuantCliError` into ``Error: ...`` on stderr and the contract's exit code
(1 gate/check failed, 2 bad input or usage); ``--debug`` shows the traceback instead.

Only light modules are imported here: heavy packages load inside the commands that need them.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Annotated

import typer
from rich.markup import escape

try:  # typer >= 0.20 vendors click as typer._click; older versions use click itself
    import typer._click as click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover
    import click
    from click.exceptions import ClickException

from quantcli import __version__
from quantcli.cli._common import polish_help, stderr, to_json
from quantcli.errors import EXIT_CRASH, GateFailedError, QuantCliError

#: Each command group: (its modules, the first of which defines ``app``; the one-line help the
#: root's help lists). Groups load on first use, so ``qcli --help`` and ``qcli data ...`` do not
#: import the whole library; ``tests/test_cli_help.py`` checks each line equals the group's help.
GROUPS: dict[str, tuple[tuple[str, ...], str]] = {
    "data": (("data",), "Ingest, validate and summarise OHLCV bars in the offline store."),
    "features": (
        ("features", "features_online"),
        "Build, inspect and materialize feature sets.",
    ),
    "backtest": (("backtest",), "Combinatorial purged cross-validation backtests with gates."),
    "model": (
        ("model", "model_export", "model_shadow"),
        "Train, validate, export, scan, promote and roll back models (MLflow registry).",
    ),
    "monitor": (("monitor",), "Drift, rolling performance, retraining triggers and alert guards."),
    "audit": (
        ("audit",),
        "Verify, anchor and export the tamper-evident prediction audit ledger.",
    ),
    "pipeline": (("pipeline",), "Run the whole flow in one command."),
}
#: The top-level commands ``quantcli.cli.serving`` registers, with their one-line help.
TOP_COMMANDS: dict[str, str] = {
    "serve": "Serve predictions over HTTP (FastAPI under uvicorn) until Ctrl-C; follow the "
    "registry.",
    "predict": "Predict in-process (same path as the service) and record it in the audit ledger.",
}


def load_command(name: str) -> click.Command:
    """The real click command of group or top-level command ``name`` (imports its modules)."""
    holder = typer.Typer(add_completion=False)  # built as a child, as `add_typer` always did
    if name in GROUPS:
        modules = [importlib.import_module(f"quantcli.cli.{m}") for m in GROUPS[name][0]]
        holder.add_typer(modules[0].app, name=name)
    else:
        importlib.import_module("quantcli.cli.serving").register(holder)
        holder.callback()(lambda: None)  # a group even though it holds one command's twin
    return polish_help(typer.main.get_command(holder).commands[name])


class LazyRoot(typer.core.TyperGroup):
    """The root ``qcli`` group: lists every command without importing it, loads one on use."""

    _listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*TOP_COMMANDS, *GROUPS]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in GROUPS and cmd_name not in TOP_COMMANDS:
            return None
        if self._listing:  # the root's own help screen needs names and one-liners only
            short = GROUPS[cmd_name][1] if cmd_name in GROUPS else TOP_COMMANDS[cmd_name]
            return typer.core.TyperCommand(cmd_name, help=short, short_help=short)
        loaded = self.commands.get(cmd_name)
        if loaded is None:
            loaded = self.commands[cmd_name] = load_command(cmd_name)
        return loaded

    def get_help(self, ctx: click.Context) -> str:
        self._listing = True
        try:
            return super().get_help(ctx)
        finally:
            self._listing = False

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    name="qcli",
    cls=LazyRoot,
    help=(
        "quantcli: from raw OHLCV bars to a served, monitored, auditable trading model.\n\n"
        "State lives under $QCLI_HOME (default ./.qcli). Every command takes --json.\n"
        "Exit codes: 0 ok, 1 a gate or check failed, 2 bad input or usage, 3 a crash (a bug)."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_DEBUG_ENV = "QCLI_DEBUG"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"qcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback on errors.", envvar=_DEBUG_ENV)
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    if debug:
        os.environ[_DEBUG_ENV] = "1"


def command() -> typer.core.TyperGroup:
    """The click command tree of ``qcli``, with help texts made readable (see polish_help)."""
    return polish_help(typer.main.get_command(app))


def _json_requested(argv: list[str]) -> bool:
    return "--json" in argv


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point with the one error handler."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get(_DEBUG_ENV) == "1"
    try:
        # with standalone_mode=False, click *returns* the code of a `typer.Exit(code)`
        code = command()(args=args, prog_name="qcli", standalone_mode=False)
        if code == 130:  # typer turns Ctrl-C (KeyboardInterrupt) into a silent Exit(130)
            stderr.print("Interrupted.")
    except QuantCliError as exc:
        if debug:
            raise
        if isinstance(exc, GateFailedError) and exc.result is not None and _json_requested(args):
            sys.stdout.write(to_json(exc.result) + "\n")
        stderr.print(f"[bold red]Error:[/] {escape(exc.message)}", highlight=False, markup=True)
        for reason in getattr(exc, "reasons", []) or []:
            stderr.print(f"  - {reason}", highlight=False, markup=False)
        if exc.hint:
            stderr.print(f"Hint: {exc.hint}", highlight=False, markup=False)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        stderr.print("Aborted.")
        sys.exit(1)
    except ClickException as exc:  # usage errors: exit 2 with click's own message
        exc.show()
        sys.exit(2)
    except KeyboardInterrupt:
        stderr.print("Interrupted.")
        sys.exit(130)
    except Exception as exc:
        if _is_interrupt(exc) and not debug:
            stderr.print("Interrupted.")  # Ctrl-C that DuckDB turned into its own error
            sys.exit(130)
        # a crash is not a failed gate: exit 1 would read as one to cron and CI
        if debug:
            traceback.print_exc()
        else:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            stderr.print(
                f"[bold red]Internal error:[/] {escape(type(exc).__name__)}"
                f"{': ' + escape(first) if first else ''}",
                highlight=False,
                markup=True,
            )
            stderr.print("Hint: rerun with --debug for the traceback, and report it",
                         highlight=False, markup=False)  # fmt: skip
        sys.exit(EXIT_CRASH)
    sys.exit(code if isinstance(code, int) else 0)


def _is_interrupt(exc: BaseException) -> bool:
    """True for the error DuckDB raises when Ctrl-C lands inside one of its queries.

    DuckDB checks for a pending SIGINT while it executes and answers with its own
    ``InterruptException`` ("Query interrupted") instead of Python's ``KeyboardInterrupt``; the
    store is rolled back either way, so the user gets the same "Interrupted." and exit 130.
    """
    import duckdb

    return isinstance(exc, duckdb.InterruptException) or (
        isinstance(exc, RuntimeError | duckdb.Error) and str(exc).strip() == "Query interrupted"
    )


__all__ = ["app", "command", "main"]
