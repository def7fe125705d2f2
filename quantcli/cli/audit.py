"""`qcli audit ...`: Verify and export the tamper-evident prediction audit ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from quantcli.cli._common import JsonOpt, emit
from quantcli.errors import IntegrityError

app = typer.Typer(
    help="Verify and export the tamper-evident prediction audit ledger.", no_args_is_help=True
)

LedgerOpt = Annotated[
    Path | None,
    typer.Option("--ledger", help="Ledger file (default $QCLI_HOME/audit/ledger.jsonl)."),
]


@app.command("verify")
def verify_cmd(ledger: LedgerOpt = None, json_mode: JsonOpt = False) -> None:
    """Walk the hash chain; exit 1 naming the first broken record.

    Every record must carry the previous record's hash, the next sequence number, and a hash
    matching its own content. An edited, inserted, reordered or deleted record breaks the chain.

    Examples:

        qcli audit verify

        qcli audit verify --json
    """
    from quantcli.audit import verify_ledger

    result = verify_ledger(ledger)
    if result["ok"]:
        emit(
            result,
            json_mode,
            lambda con: con.print(
                f"[green]OK[/]: {result['records']} records, chain intact "
                f"(head {result['head_hash'][:16]}...)"
            ),
        )
        return
    b = result["first_broken"]
    emit(result, json_mode)  # the JSON result, then the one-line error on stderr
    raise IntegrityError(
        f"{result['path']}: first broken record is seq {b['seq']} (line {b['line']}): "
        f"{b['reason']}",
        hint=f"{result['records']} records before it are intact",
    )


@app.command("export")
def export_cmd(
    output: Annotated[Path, typer.Option("--output", "-o", help="Parquet file to write.")],
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only records at/after this date or ISO timestamp (UTC)."),
    ] = None,
    ledger: LedgerOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Export ledger records to Parquet (the chain is verified first).

    Examples:

        qcli audit export --output audit.parquet

        qcli audit export --since 2026-01-01 --output january.parquet --json
    """
    from quantcli.audit import export_ledger

    result = export_ledger(output, since=since, path=ledger)
    emit(
        result,
        json_mode,
        lambda con: con.print(f"wrote {result['rows']} records to {result['output']}"),
    )
