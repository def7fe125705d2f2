"""Keys kept apart: location, permissions, fingerprints, rotation, verification with public keys."""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

from quantcli import integrity
from quantcli.errors import IntegrityError


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    p = tmp_path / "model.bin"
    p.write_bytes(b"weights " * 64)
    return p


def test_default_key_is_created_0600_outside_the_artifact_tree(qcli_home, artifact):
    sha, sig = integrity.sign_file(artifact)
    key = qcli_home / "keys" / "signing.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert not key.resolve().is_relative_to((qcli_home / "mlartifacts").resolve())
    fp = integrity.signature_fingerprint(sig)
    assert sig.startswith(f"ed25519:{fp}:") and len(fp) == 16
    assert (qcli_home / "keys" / "keyring" / f"signing-{fp}.pub").is_file()
    assert integrity.verify_file(artifact, sha, sig) == sha


def test_key_location_is_configurable_by_env(qcli_home, tmp_path, monkeypatch, artifact):
    keys = tmp_path / "vault"
    monkeypatch.setenv("QCLI_KEYS_DIR", str(keys))
    sha, sig = integrity.sign_file(artifact)
    assert (keys / "signing.key").is_file() and not (qcli_home / "keys").exists()
    integrity.verify_file(artifact, sha, sig)
    # a private key file named directly
    monkeypatch.setenv("QCLI_SIGNING_KEY", str(tmp_path / "elsewhere" / "k.pem"))
    sha, sig2 = integrity.sign_file(artifact)
    assert (tmp_path / "elsewhere" / "k.pem").is_file()
    assert integrity.signature_fingerprint(sig2) != integrity.signature_fingerprint(sig)
    integrity.verify_file(artifact, sha, sig2)  # its public key joined the keyring


def test_loose_permissions_and_a_key_in_the_artifact_tree_are_refused(qcli_home, artifact):
    integrity.sign_file(artifact)
    key = qcli_home / "keys" / "signing.key"
    os.chmod(key, 0o640)
    with pytest.raises(integrity.KeyPermissionError, match="mode 0640, looser than 0600") as exc:
        integrity.sign_file(artifact)
    assert exc.value.exit_code == 2 and f"chmod 600 {key}" in exc.value.hint
    os.chmod(key, 0o600)
    inside = qcli_home / "mlartifacts" / "keys"
    inside.mkdir(parents=True)
    shutil.copy(key, inside / "signing.key")
    os.environ["QCLI_KEYS_DIR"] = str(inside)
    try:
        with pytest.raises(integrity.KeyPermissionError, match="inside the artifact tree"):
            integrity.sign_file(artifact)
    finally:
        del os.environ["QCLI_KEYS_DIR"]


def test_rotation_keeps_old_signatures_valid_and_new_ones_carry_the_new_key(qcli_home, artifact):
    sha, old_sig = integrity.sign_file(artifact)
    rotated = integrity.rotate_key("signing")
    assert rotated["old_fingerprint"] == integrity.signature_fingerprint(old_sig)
    _, new_sig = integrity.sign_file(artifact)
    assert integrity.signature_fingerprint(new_sig) == rotated["new_fingerprint"]
    assert rotated["new_fingerprint"] != rotated["old_fingerprint"]
    integrity.verify_file(artifact, sha, old_sig)
    integrity.verify_file(artifact, sha, new_sig)
    # dropping the old public key from the keyring retires its signatures
    ring = qcli_home / "keys" / "keyring"
    (ring / f"signing-{rotated['old_fingerprint']}.pub").unlink()
    with pytest.raises(IntegrityError, match="not in the signing keyring"):
        integrity.verify_file(artifact, sha, old_sig)


def test_verification_needs_public_keys_only(qcli_home, artifact):
    sha, sig = integrity.sign_file(artifact)
    (qcli_home / "keys" / "signing.key").unlink()  # the serving host never has it
    assert integrity.verify_file(artifact, sha, sig) == sha
    assert not (qcli_home / "keys" / "signing.key").exists()  # verifying did not create one


def test_a_flipped_signature_bit_and_another_purpose_key_are_refused(qcli_home, artifact):
    sha, sig = integrity.sign_file(artifact)
    scheme, fp, b64 = sig.split(":")
    raw = bytearray(base64.b64decode(b64))
    raw[0] ^= 1
    with pytest.raises(IntegrityError, match="signature does not verify"):
        integrity.verify_file(artifact, sha, f"{scheme}:{fp}:{base64.b64encode(raw).decode()}")
    # a non-canonical base64 spelling of the same bytes is not accepted either
    padded = b64[:-3] + chr(ord(b64[-3]) ^ 1) + "=="
    with pytest.raises(IntegrityError):
        integrity.verify_file(artifact, sha, f"{scheme}:{fp}:{padded}")
    # the ledger key (held by the serving host) cannot sign artifacts
    ledger_sig = integrity.sign_message(sha.encode(), "ledger")
    with pytest.raises(IntegrityError, match="not in the signing keyring"):
        integrity.verify_file(artifact, sha, ledger_sig)
