"""A long-lived writer (the service) under changes made beside it: key rotation, a deleted or
replaced ledger file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from quantcli.audit import AuditLedger, LedgerBrokenError, head_path, ledger_path, verify_ledger


def rec(i: int) -> dict:
    return {"symbol": f"S{i % 4}", "prediction": 0.25 * i, "request_id": f"r{i}"}


def fingerprints() -> list[str]:
    lines = ledger_path().read_bytes().splitlines()
    return [json.loads(line)["sig"].split(":")[1] for line in lines if b'"sig"' in line]


def other_process_appends(n: int, env: dict | None = None) -> None:
    code = (
        "from quantcli.audit import AuditLedger\n"
        "with AuditLedger() as led:\n"
        f"    led.append([{{'symbol': 'X', 'n': i}} for i in range({n})])\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, **(env or {})})


def test_a_running_writer_follows_a_ledger_key_rotation(qcli_home, qcli):
    with AuditLedger() as service:
        service.append([rec(0)])
        old = fingerprints()[-1]
        code, out, err = qcli("audit", "rotate-key", "--purpose", "ledger", "--json")
        assert code == 0, err
        new = json.loads(out)["new_fingerprint"]
        other_process_appends(1)  # `qcli predict` signs with the new key
        service.append([rec(1)])  # the service neither refuses nor keeps the retired key
        service.append([rec(2)])
    assert fingerprints() == [old, new, new, new]
    res = verify_ledger()
    assert res["ok"], res["first_broken"]
    assert res["signed_head"]["key"] == new


def test_a_running_writer_learns_a_key_another_writer_published(qcli_home, tmp_path):
    """Another writer with its own ledger key (published to the keyring) appends: the service
    re-reads the keyring instead of declaring the ledger broken."""
    with AuditLedger() as service:
        service.append([rec(0)])
        other_process_appends(2, {"QCLI_LEDGER_KEY": str(tmp_path / "keys" / "other.key")})
        service.append([rec(1)])
    assert len(set(fingerprints())) == 2
    assert verify_ledger()["ok"]


@pytest.mark.parametrize("which", ["ledger", "head"])
@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_writer_refuses_once_its_files_are_deleted_or_replaced(qcli_home, which, how):
    """Nothing is answered that lands in an unlinked inode, or beside the file verify reads."""
    with AuditLedger() as service:
        service.append([rec(0)])
        target = ledger_path() if which == "ledger" else head_path(ledger_path())
        if how == "deleted":
            target.unlink()
        else:
            copy = target.with_name("copy")
            shutil.copy(target, copy)
            os.replace(copy, target)  # same bytes, another file
        before = target.read_bytes() if target.exists() else None
        with pytest.raises(LedgerBrokenError, match=f"its {which} file was {how}"):
            service.append([rec(1)])
        with pytest.raises(LedgerBrokenError):
            service.append([rec(2)])  # and stays refused
        assert (target.read_bytes() if target.exists() else None) == before


def test_a_ledger_cut_and_regrown_to_the_same_size_is_re_read(qcli_home):
    """Size alone does not say the file is unchanged: the tail is re-read when it was written
    by anyone else, so the chain never forks."""
    with AuditLedger() as service:
        service.append([rec(0)])
        saved = ledger_path().read_bytes(), head_path(ledger_path()).read_bytes()
        service.append([rec(1)])
        ledger_path().write_bytes(saved[0])  # rolled back in place (same file) ...
        head_path(ledger_path()).write_bytes(saved[1])
        with AuditLedger() as other:  # ... and regrown by another writer to the same size
            other.append([rec(7)])
        service.append([rec(2)])
    res = verify_ledger()
    assert res["ok"], res["first_broken"]
    assert res["records"] == 3


def test_verify_walks_a_large_ledger_in_bounded_memory(qcli_home):
    pad = "x" * 2000
    with AuditLedger() as led:
        for b in range(25):
            led.append([{"symbol": "S", "n": b * 1000 + i, "pad": pad} for i in range(1000)])
    size = ledger_path().stat().st_size
    assert size > 50_000_000
    code = (
        "import resource, sys\n"
        "from quantcli.audit import verify_ledger\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "assert verify_ledger()['ok']\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    grown_kib = int(out.stdout)
    assert grown_kib * 1024 < size / 4, (grown_kib, size)
