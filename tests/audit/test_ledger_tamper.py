"""The ledger against an editor without the ledger key: truncation, forgery, rewrites, reorders.

Every test edits the files the way an insider with shell access would (``head -n``, a text
editor, a script that recomputes hashes) and checks that ``qcli audit verify`` names the break
and that a writer refuses to extend the broken ledger.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from quantcli.audit import (
    AuditLedger,
    LedgerBrokenError,
    head_path,
    ledger_path,
    record_hash,
    verify_ledger,
)
from quantcli.audit._chain import canonical_bytes, record_line


def rec(i: int) -> dict:
    return {"symbol": f"S{i % 4}", "prediction": 0.25 * i, "request_id": f"r{i}"}


def write(n: int, per_call: int = 1, path: Path | None = None) -> None:
    with AuditLedger(path) as led:
        for i in range(0, n, per_call):
            led.append([rec(j) for j in range(i, min(n, i + per_call))])


def lines_of(path: Path | None = None) -> list[bytes]:
    return (path or ledger_path()).read_bytes().splitlines(keepends=True)


def forged_line(prev_line: bytes | None, seq: int, payload: dict) -> bytes:
    """A record an attacker builds by hand: right seq, right prev_hash, recomputed hash, no sig."""
    prev = json.loads(prev_line)["hash"] if prev_line else "0" * 64
    body = {**payload, "seq": seq, "prev_hash": prev}
    return record_line(canonical_bytes(body), record_hash(body)) + b"\n"


# -- the four reproducers of the ledger attack ---------------------------------------------------
@pytest.mark.parametrize("keep", [0, 1, 3, 5])
def test_trailing_truncation_of_any_length_is_detected(qcli_home, qcli, keep):
    write(6, per_call=1)
    p = ledger_path()
    p.write_bytes(b"".join(lines_of()[:keep]))  # head -n KEEP ledger.jsonl > t && mv t ...
    res = verify_ledger()
    assert res["ok"] is False
    assert res["first_broken"]["kind"] == "truncated"
    assert res["records"] == keep and res["first_broken"]["seq"] == keep
    assert (
        f"signed head counts 6: {6 - keep} trailing record(s) were removed"
        in (res["first_broken"]["reason"])
    )
    code, _, err = qcli("audit", "verify")
    assert code == 1 and "trailing record(s) were removed" in err
    # the next prediction does not extend it
    with pytest.raises(LedgerBrokenError, match="truncated") as exc:
        AuditLedger()
    assert exc.value.exit_code == 2
    assert len(lines_of()) == keep


def test_truncation_inside_an_append_leaves_its_first_records_unverifiable(qcli_home):
    write(6, per_call=3)  # signatures on seq 2 and 5
    ledger_path().write_bytes(b"".join(lines_of()[:4]))
    broken = verify_ledger()["first_broken"]
    assert (broken["kind"], broken["seq"]) == ("truncated", 3)
    assert "records seq 3..3 after the last signature cannot be verified" in broken["reason"]


def test_an_empty_ledger_verifies_only_with_its_signed_genesis_head(qcli_home, qcli):
    AuditLedger().close()
    assert verify_ledger()["ok"] and verify_ledger()["records"] == 0
    head_path(ledger_path()).unlink()
    res = verify_ledger()
    assert res["ok"] is False and res["first_broken"]["kind"] == "head"
    assert qcli("audit", "verify")[0] == 1


def test_forged_append_with_recomputed_hash_is_an_unanchored_tail(qcli_home, qcli):
    write(4)
    lines = lines_of()
    forged = forged_line(lines[-1], 4, rec(99))
    ledger_path().write_bytes(b"".join([*lines, forged]))
    res = verify_ledger()
    assert res["ok"] is False
    assert res["first_broken"] == {
        "kind": "tail",
        "line": 5,
        "seq": 4,
        "reason": "record seq 4 and the 0 after it carry no valid ledger signature: "
        "appended without the ledger key",
    }
    assert res["last_anchored"]["seq"] == 3 and res["unanchored_tail"] == 1
    code, out, _ = qcli("audit", "verify", "--json")
    assert code == 1 and json.loads(out)["unanchored_tail"] == 1
    with pytest.raises(LedgerBrokenError, match="no ledger signature"):
        AuditLedger()


@pytest.mark.parametrize("start", [0, 2])
def test_a_chain_rewritten_from_any_record_is_detected(qcli_home, start):
    """Rewrite records start.. with recomputed hashes, keeping (or dropping) the old signatures."""
    write(5, per_call=1)
    lines = lines_of()
    out = lines[:start]
    for seq in range(start, 5):
        out.append(forged_line(out[-1] if out else None, seq, rec(100 + seq)))
    ledger_path().write_bytes(b"".join(out))
    res = verify_ledger()
    assert res["ok"] is False
    assert res["records"] == start
    assert res["first_broken"]["seq"] == start
    # re-sign attempt: copy the old signature onto the rewritten last record
    old_sig = json.loads(lines[-1])["sig"]
    last = json.loads(out[-1])
    body = {k: v for k, v in last.items() if k not in ("hash", "sig")}
    out[-1] = record_line(canonical_bytes(body), last["hash"], old_sig) + b"\n"
    ledger_path().write_bytes(b"".join(out))
    res = verify_ledger()
    assert res["ok"] is False and res["first_broken"]["seq"] == start


def test_deleted_and_reordered_records_are_named(qcli_home):
    write(5)
    lines = lines_of()
    ledger_path().write_bytes(b"".join([lines[0], lines[2], lines[1], *lines[3:]]))
    broken = verify_ledger()["first_broken"]
    assert (broken["line"], broken["seq"]) == (2, 1)
    assert "seq is 2, expected 1" in broken["reason"]
    ledger_path().write_bytes(b"".join([lines[0], *lines[2:]]))
    assert verify_ledger()["first_broken"]["seq"] == 1


def test_a_different_spelling_of_the_same_json_is_an_alteration(qcli_home):
    """`1e-05` and `1E-05` parse to the same float: the stored bytes are still what is checked."""
    with AuditLedger() as led:
        led.append([{"x": 1e-05}])
        led.append([{"x": 2.0}])
    lines = lines_of()
    assert b"1e-05" in lines[0]
    ledger_path().write_bytes(lines[0].replace(b"1e-05", b"1E-05") + lines[1])
    broken = verify_ledger()["first_broken"]
    assert broken["seq"] == 0 and "canonical form" in broken["reason"]


def test_anchor_prints_the_signed_head_and_expect_head_pins_it(qcli_home, qcli):
    write(3)
    code, out, err = qcli("audit", "anchor", "--json")
    assert code == 0, err
    anchor = json.loads(out)
    assert anchor["count"] == 3 and anchor["sig"].startswith("ed25519:")
    assert anchor["head_hash"] == json.loads(lines_of()[-1])["hash"]
    write(2)  # the ledger grows: the pinned head is still in it
    code, out, _ = qcli("audit", "verify", "--expect-head", anchor["head_hash"], "--json")
    assert code == 0 and json.loads(out)["pinned_seq"] == 2
    # truncate AND roll the head file back to an older copy: only the pin catches it
    saved_head = head_path(ledger_path()).read_bytes()
    write(1)
    lines = lines_of()
    ledger_path().write_bytes(b"".join(lines[:5]))
    head_path(ledger_path()).write_bytes(saved_head)
    assert verify_ledger()["ok"] is True  # consistent with the older head ...
    pinned = json.loads(lines[5])["hash"]
    code, _, err = qcli("audit", "verify", "--expect-head", pinned)
    assert code == 1 and "pinned head" in err  # ... but not with the anchor kept elsewhere
    code, _, err = qcli("audit", "verify", "--expect-head", "nothex")
    assert code == 2 and "--expect-head" in err


# -- hostile records: never a traceback ---------------------------------------------------------
def test_verify_does_not_crash_on_nan_or_deep_nesting(qcli_home, qcli):
    write(2)
    lines = lines_of()
    nan_line = lines[1].replace(b'"prediction":0.25', b'"prediction":NaN')
    for bad in (nan_line, b"[" * 100_000 + b"\n", b"{" * 100_000 + b"\n", b'{"seq":true}\n'):
        ledger_path().write_bytes(lines[0] + bad)
        code, out, err = qcli("audit", "verify", "--json")
        assert code == 1, err
        assert json.loads(out)["first_broken"]["line"] == 2
        assert "Traceback" not in err


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ledger=st.binary(max_size=600)
    | st.lists(
        st.sampled_from([b"{", b"}", b"[", b"]", b'"seq":', b"0", b",", b"\n", b"NaN", b'"'])
    ).map(b"".join),
    head=st.binary(max_size=1100),
)
def test_fuzz_arbitrary_bytes_give_exit_1_or_2_never_a_traceback(qcli_home, qcli, ledger, head):
    p = ledger_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(ledger)
    head_path(p).write_bytes(head)
    code, out, err = qcli("audit", "verify", "--json")
    assert code in (0, 1, 2), err
    assert "Traceback" not in err
    if code != 2:
        assert json.loads(out)["ok"] is (code == 0)
    assert code != 0 or ledger == b""  # nothing but an empty ledger can pass without the key


# -- the stateful model: verify flags exactly the first tampered record -------------------------
class LedgerTampering(RuleBasedStateMachine):
    """Honest appends interleaved with an attacker's edits of the ledger file.

    The model keeps the honest lines; the first tampered record is the first line index where
    the file and the honest lines differ (a missing line counts: truncation; an extra one too:
    a forged append). Every honest append is one record (one signature), so verify can and must
    name exactly that record.
    """

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self._tmp = tempfile.TemporaryDirectory()
        self.path = Path(self._tmp.name) / "ledger.jsonl"
        self.honest: list[bytes] = []
        AuditLedger(self.path).close()

    def teardown(self) -> None:
        self._tmp.cleanup()

    def _file(self) -> list[bytes]:
        return self.path.read_bytes().splitlines(keepends=True)

    def first_tampered(self) -> int | None:
        got, want = self._file(), self.honest
        for k in range(max(len(got), len(want))):
            if k >= len(got) or k >= len(want) or got[k] != want[k]:
                return k
        return None

    @rule(n=st.integers(1, 3))
    def append(self, n: int) -> None:
        if self.first_tampered() is not None:
            # the writer checks the end at open; past a break it either refuses or appends,
            # and appending must never move or hide the first break
            before = len(self._file())
            try:
                led = AuditLedger(self.path)
            except LedgerBrokenError:
                return
            with led:
                led.append([rec(9999)])
            if before == len(self.honest):  # an honest record, written after the edited ones
                self.honest.append(self._file()[-1])
            return
        with AuditLedger(self.path) as led:
            for _ in range(n):
                led.append([rec(len(self.honest))])
                self.honest = self._file()

    @precondition(lambda self: self.honest)
    @rule(data=st.data())
    def truncate(self, data) -> None:
        lines = self._file()
        keep = data.draw(st.integers(0, max(0, len(lines) - 1)))
        self.path.write_bytes(b"".join(lines[:keep]))

    @precondition(lambda self: self.honest)
    @rule(data=st.data())
    def flip_a_byte(self, data) -> None:
        raw = bytearray(self.path.read_bytes())
        if not raw:
            return
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] ^= data.draw(st.integers(1, 255))
        self.path.write_bytes(bytes(raw))

    @precondition(lambda self: len(self.honest) >= 2)
    @rule(data=st.data())
    def reorder(self, data) -> None:
        lines = self._file()
        if len(lines) < 2:
            return
        i = data.draw(st.integers(0, len(lines) - 2))
        j = data.draw(st.integers(i + 1, len(lines) - 1))
        lines[i], lines[j] = lines[j], lines[i]
        self.path.write_bytes(b"".join(lines))

    @rule()
    def forge_with_recomputed_hash(self) -> None:
        lines = self._file()
        seq = len(lines)
        try:
            forged = forged_line(lines[-1] if lines else None, seq, rec(1000 + seq))
        except (ValueError, KeyError, TypeError):  # the previous line is already garbage
            forged = b'{"seq":0}\n'
        self.path.write_bytes(b"".join([*lines, forged]))

    @invariant()
    def verify_names_exactly_the_first_tampered_record(self) -> None:
        res = verify_ledger(self.path)
        first = self.first_tampered()
        if first is None:
            assert res["ok"], res["first_broken"]
            assert res["records"] == len(self.honest)
        else:
            assert not res["ok"]
            assert res["first_broken"]["seq"] == first, (first, res)
            assert res["records"] == first


LedgerTampering.TestCase.settings = settings(max_examples=30, stateful_step_count=12, deadline=None)


@pytest.fixture
def _isolated_keys(qcli_home):
    return qcli_home


def test_stateful_ledger_tampering(_isolated_keys):
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(LedgerTampering, settings=LedgerTampering.TestCase.settings)


def test_the_ledger_key_is_private_and_separate_from_the_signing_key(qcli_home):
    write(1)
    keys = qcli_home / "keys"
    assert (keys / "ledger.key").stat().st_mode & 0o777 == 0o600
    assert not (keys / "signing.key").exists()  # appending never touched the artifact key
    os.chmod(keys / "ledger.key", 0o644)
    with pytest.raises(Exception, match="looser than 0600"):
        AuditLedger()


def test_ledger_key_rotation_keeps_old_records_verifiable(qcli_home, qcli):
    write(2)
    code, out, err = qcli("audit", "rotate-key", "--purpose", "ledger", "--json")
    assert code == 0, err
    rotated = json.loads(out)
    write(2)
    sigs = [json.loads(line)["sig"].split(":")[1] for line in lines_of()]
    assert sigs == [rotated["old_fingerprint"]] * 2 + [rotated["new_fingerprint"]] * 2
    res = verify_ledger()
    assert res["ok"] and res["signed_head"]["key"] == rotated["new_fingerprint"]
    # retiring the old public key makes its records unverifiable: named, exit 1
    ring = qcli_home / "keys" / "keyring"
    (ring / f"ledger-{rotated['old_fingerprint']}.pub").unlink()
    broken = verify_ledger()["first_broken"]
    assert broken["seq"] == 0 and "not in the ledger keyring" in broken["reason"]
    code, _, err = qcli("audit", "rotate-key", "--purpose", "artifacts")
    assert code == 2 and "--purpose" in err


def test_a_ledger_from_before_signatures_is_adopted_then_protected(qcli_home, qcli):
    out, prev = [], "0" * 64
    for seq in range(3):  # what the unsigned writer stored: canonical body + hash, no head
        body = {**rec(seq), "seq": seq, "prev_hash": prev}
        prev = record_hash(body)
        out.append(record_line(canonical_bytes(body), prev) + b"\n")
    p = ledger_path()
    p.parent.mkdir(parents=True)
    p.write_bytes(b"".join(out))
    with pytest.raises(LedgerBrokenError) as exc:
        AuditLedger()
    assert "qcli audit adopt" in exc.value.hint
    code, res, err = qcli("audit", "adopt", "--json")
    assert code == 0, err
    assert json.loads(res)["adopted_records"] == 3
    write(1)
    res = verify_ledger()
    assert res["ok"] and res["records"] == 5 and res["last_anchored"]["seq"] == 4
    assert json.loads(lines_of()[3])["event"] == "adopted"
    code, _, err = qcli("audit", "adopt")
    assert code == 2 and "nothing to adopt" in err
    # edits after adoption are caught as usual
    p.write_bytes(b"".join(lines_of()[:4]))
    assert verify_ledger()["first_broken"]["kind"] == "truncated"


def test_adoption_refuses_a_broken_chain(qcli_home, qcli):
    body = {**rec(0), "seq": 0, "prev_hash": "0" * 64}
    line = record_line(canonical_bytes(body), "f" * 64) + b"\n"  # wrong hash
    ledger_path().parent.mkdir(parents=True)
    ledger_path().write_bytes(line)
    code, _, err = qcli("audit", "adopt")
    assert code == 2 and "record seq 0 is not intact" in err
    assert not head_path(ledger_path()).exists()


def test_a_deleted_ledger_is_reported_while_its_head_remains(qcli_home, qcli):
    write(3)
    ledger_path().unlink()
    code, _, err = qcli("audit", "verify")
    assert code == 1 and "was deleted (its signed head counts 3 records)" in err
    with pytest.raises(LedgerBrokenError, match="deleted but its signed head remains"):
        AuditLedger()  # not a fresh start
    assert not ledger_path().exists()  # the refusal wrote nothing
