"""`qcli audit ...`: verify, anchor and export the tamper-evident prediction audit ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from quantcli.audit import adopt_unsigned_ledger, anchor_ledger, export_ledger, verify_ledger
from quantcli.cli._common import JsonOpt, emit
from quantcli.errors import InputError
from quantcli.integrity import PURPOSES, rotate_key

app = typer.Typer(
    help="Verify, anchor and export the tamper-evident prediction audit ledger.",
    no_args_is_help=True,
)

LedgerOpt = Annotated[
    Path | None,
    typer.Option("--ledger", help="Ledger file (default $QCLI_HOME/audit/ledger.jsonl)."),
]


@app.command("verify")
def verify_cmd(
    ledger: LedgerOpt = None,
    expect_head: Annotated[
        str | None,
        typer.Option(
            "--expect-head",
            help="A head hash printed earlier by `qcli audit anchor`: the ledger must contain it.",
        ),
    ] = None,
    json_mode: JsonOpt = False,
) -> None:
    """Check every record, signature and the signed head; exit 1 naming the first break.

    Every record must be the canonical JSON the writer stores, carry the next sequence number,
    the previous record's hash and a hash of its own content; the last record of every append is
    signed with the ledger key, and the signed head (ledger.jsonl.head) counts the records. An
    edited, inserted, reordered or deleted record, a truncation of any length, records appended
    or a chain rewritten without the ledger key all fail. Truncation together with an older copy
    of the head file is caught only by --expect-head with a hash kept elsewhere.

    Reports the last anchored (signed) record and any unanchored tail.

    Examples:

        qcli audit verify

        qcli audit verify --expect-head 3f2a...c9 --json
    """
    result = verify_ledger(ledger, expect_head=expect_head).raise_if_failed()

    def render(con) -> None:
        anchored = result.last_anchored
        last = f"seq {anchored['seq']}" if anchored else "none (empty ledger)"
        con.print(
            f"[green]OK[/]: {result.records} records, chain and signatures intact, "
            f"last anchored record {last}, no unanchored tail (head {result.head_hash[:16]}...)"
        )
        if result.pinned_seq is not None:
            con.print(f"pinned head found at seq {result.pinned_seq}")

    emit(result, json_mode, render)


@app.command("anchor")
def anchor_cmd(ledger: LedgerOpt = None, json_mode: JsonOpt = False) -> None:
    """Verify the ledger and print its signed head, to keep somewhere the ledger's host cannot edit.

    The head is the record count, the hash of the last record and the ledger key's signature.
    Later, `qcli audit verify --expect-head HASH` proves the ledger still contains that record:
    it catches a truncation or rewrite even by someone who kept an older copy of the head file.

    Examples:

        qcli audit anchor

        qcli audit anchor --json >> /mnt/worm/quantcli-anchors.jsonl
    """
    out = anchor_ledger(ledger)
    emit(
        out,
        json_mode,
        lambda con: con.print(
            f"count {out.count}\nhead_hash {out.head_hash}\nkey {out.key}\n"
            f"sig {out.sig}\nverify later: qcli audit verify --expect-head {out.head_hash}"
        ),
    )


@app.command("adopt")
def adopt_cmd(ledger: LedgerOpt = None, json_mode: JsonOpt = False) -> None:
    """Sign a ledger written by a quantcli that did not sign records, so it can be extended.

    The hash chain must be intact. One signed record is appended; its signature vouches for
    every record before it as it is now (edits made before adoption cannot be detected).

    Examples:

        qcli audit adopt
    """
    result = adopt_unsigned_ledger(ledger)
    emit(
        result,
        json_mode,
        lambda con: con.print(
            f"adopted {result.adopted_records} records of {result.path} "
            f"(head {result.head_hash[:16]}..., key {result.key})"
        ),
    )


@app.command("rotate-key")
def rotate_key_cmd(
    purpose: Annotated[
        str,
        typer.Option("--purpose", help="Which key: signing (artifacts, verdicts) or ledger."),
    ] = "signing",
    json_mode: JsonOpt = False,
) -> None:
    """Replace a private key by a new one; its old public key stays in the keyring.

    Signatures made before the rotation keep verifying; new ones carry the new key's
    fingerprint. The private key lives in $QCLI_SIGNING_KEY / $QCLI_LEDGER_KEY, else
    $QCLI_KEYS_DIR (default $QCLI_HOME/keys); the keyring in $QCLI_KEYRING, else <keys>/keyring.

    Examples:

        qcli audit rotate-key --purpose signing
    """
    if purpose not in PURPOSES:
        raise InputError(f"--purpose must be one of {', '.join(PURPOSES)}, got {purpose!r}")
    result = rotate_key(purpose)
    emit(
        result,
        json_mode,
        lambda con: con.print(
            f"{purpose} key rotated: {result.old_fingerprint or 'none'} -> "
            f"{result.new_fingerprint} (keyring {result.keyring})"
        ),
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
    """Export ledger records to Parquet (the ledger is verified first).

    Examples:

        qcli audit export --output audit.parquet

        qcli audit export --since 2026-01-01 --output january.parquet --json
    """
    result = export_ledger(output, since=since, path=ledger)
    emit(
        result, json_mode, lambda con: con.print(f"wrote {result.rows} records to {result.output}")
    )
