"""Artifact integrity: sha256 digests, Ed25519 signatures, and the keys behind them.

Every artifact the serving path loads (LightGBM text models, ONNX graphs) has its sha256 recorded
in the registry and a detached Ed25519 signature over that digest. Nothing in quantcli unpickles a
model: the formats are LightGBM text, ONNX and plain NumPy arrays.

Keys
----
There are two key pairs, one per *purpose*, so that holding one never grants the other:

``signing``
    Signs artifacts and gate verdicts (``qcli model train | export | scan | validate``). Serving
    never needs it: ``qcli serve`` and ``qcli predict`` verify with public keys only.
``ledger``
    Signs the audit ledger's checkpoints. The process that appends predictions holds it.

Locations (the first that is set wins):

* private key: ``$QCLI_SIGNING_KEY`` / ``$QCLI_LEDGER_KEY`` (a file path), else
  ``<keys dir>/signing.key`` / ``<keys dir>/ledger.key``;
* keys dir: ``$QCLI_KEYS_DIR``, else ``$QCLI_HOME/keys``;
* public keyring: ``$QCLI_KEYRING``, else ``<keys dir>/keyring``: one PEM file per public key,
  ``<purpose>-<fingerprint>.pub``. ``$QCLI_PUBLIC_KEY`` adds one trusted ``signing`` key.

A private key inside ``$QCLI_HOME/mlartifacts`` (the artifact tree) or readable by group or
others (mode looser than 0600) is refused with :class:`KeyPermissionError` (exit 2). A missing
private key is created on first use (mode 0600, written then linked into place).

Signatures are ``ed25519:<fingerprint>:<base64>``; the fingerprint (first 16 hex digits of the
sha256 of the raw public key) names the key in the keyring that verifies it. Rotation
(:func:`rotate_key`) makes a new private key; the old public key stays in the keyring, so
signatures made before the rotation still verify. A signature whose key is not in the keyring is
refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from quantcli import config
from quantcli.errors import InputError, IntegrityError
from quantcli.results import Result

PURPOSES = ("signing", "ledger")
ENV_KEYS_DIR = "QCLI_KEYS_DIR"
ENV_KEYRING = "QCLI_KEYRING"
ENV_PUBLIC_KEY = "QCLI_PUBLIC_KEY"
ENV_PRIVATE = {"signing": "QCLI_SIGNING_KEY", "ledger": "QCLI_LEDGER_KEY"}
SIG_SCHEME = "ed25519"
_CHUNK = 1 << 20


class KeyPermissionError(InputError):
    """A private key is stored where, or with permissions that, let others read it (exit 2)."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# -- locations ----------------------------------------------------------------------------------
def _purpose(purpose: str) -> str:
    if purpose not in PURPOSES:
        raise InputError(f"`purpose` must be one of {PURPOSES}, got `purpose={purpose!r}`.")
    return purpose


def resolve_keys_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The keys directory: ``explicit``, else ``$QCLI_KEYS_DIR``, else ``$QCLI_HOME/keys``."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get(ENV_KEYS_DIR)
    return Path(env).expanduser() if env else config.keys_dir()


def private_key_path(purpose: str = "signing", keys_dir: str | os.PathLike[str] | None = None):
    """Where the private key of ``purpose`` lives (see the module docstring)."""
    env = os.environ.get(ENV_PRIVATE[_purpose(purpose)])
    if env and keys_dir is None:
        return Path(env).expanduser()
    return resolve_keys_dir(keys_dir) / f"{purpose}.key"


def keyring_dir(keys_dir: str | os.PathLike[str] | None = None) -> Path:
    """The public keyring: ``$QCLI_KEYRING``, else ``<keys dir>/keyring``."""
    env = os.environ.get(ENV_KEYRING)
    if env and keys_dir is None:
        return Path(env).expanduser()
    return resolve_keys_dir(keys_dir) / "keyring"


def _check_private_location(path: Path) -> None:
    artifacts = config.mlflow_artifacts_dir().resolve()
    if path.resolve().is_relative_to(artifacts):
        raise KeyPermissionError(
            f"private key {path} lies inside the artifact tree {artifacts}: refusing to use it",
            hint=f"move it out and point {ENV_KEYS_DIR} (or QCLI_SIGNING_KEY) at it",
        )


def _check_mode(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise KeyPermissionError(f"private key {path} is not a regular file")
    if st.st_mode & 0o077:
        raise KeyPermissionError(
            f"private key {path} has mode {stat.S_IMODE(st.st_mode):04o}, looser than 0600: "
            "refusing to use it",
            hint=f"chmod 600 {path}",
        )


# -- keys ---------------------------------------------------------------------------------------
def fingerprint(public_key: Any) -> str:
    """First 16 hex digits of the sha256 of the raw 32-byte Ed25519 public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _pem_public(public_key: Any) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _publish(purpose: str, public_key: Any, keys_dir) -> str:
    """Put ``public_key`` into the keyring (and ``<keys dir>/<purpose>.pub``); its fingerprint."""
    fp = fingerprint(public_key)
    ring = keyring_dir(keys_dir)
    entry = ring / f"{purpose}-{fp}.pub"
    if not entry.is_file():
        ring.mkdir(parents=True, exist_ok=True)
        _write_atomic(entry, _pem_public(public_key))
    current = resolve_keys_dir(keys_dir) / f"{purpose}.pub"
    if current.parent.is_dir():
        pem = _pem_public(public_key)
        if not current.is_file() or current.read_bytes() != pem:
            _write_atomic(current, pem)
    return fp


def _new_private_key(path: Path, *, replace: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if replace:
            os.replace(tmp, path)
        else:
            # link fails if another process created the key first: both then use that one
            os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def load_private_key(
    purpose: str = "signing",
    keys_dir: str | os.PathLike[str] | None = None,
    *,
    create: bool = True,
) -> tuple[Any, str]:
    """``(Ed25519PrivateKey, fingerprint)`` of ``purpose``; created on first use if ``create``.

    Raises :class:`KeyPermissionError` when the key lies in the artifact tree or its mode is
    looser than 0600, and :class:`IntegrityError` when it is missing and ``create`` is False.
    """
    path = private_key_path(purpose, keys_dir)
    _check_private_location(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if not create:
            raise IntegrityError(
                f"no {purpose} private key at {path}",
                hint=f"set {ENV_PRIVATE[purpose]} or {ENV_KEYS_DIR} to where it is kept",
            ) from None
        _new_private_key(path, replace=False)
        st = os.stat(path)
    _check_mode(path, st)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise KeyPermissionError(f"{path} is not a PEM Ed25519 private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyPermissionError(f"{path} is not an Ed25519 private key")
    fp = _publish(purpose, key.public_key(), keys_dir)
    return key, fp


def ensure_keypair(keys_dir: str | os.PathLike[str] | None = None, purpose="signing") -> Path:
    """Create the key pair of ``purpose`` if missing; return the keys directory."""
    load_private_key(purpose, keys_dir)
    return resolve_keys_dir(keys_dir)


@dataclass(frozen=True, kw_only=True)
class KeyRotation(Result):
    """A rotated key: ``purpose``, the old and new fingerprints (``old_fingerprint`` ``None``
    when there was no key), the private key's path and the keyring directory."""

    purpose: str
    old_fingerprint: str | None
    new_fingerprint: str
    private_key: str
    keyring: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "purpose": self.purpose,
            "old_fingerprint": self.old_fingerprint,
            "new_fingerprint": self.new_fingerprint,
            "private_key": self.private_key,
            "keyring": self.keyring,
        }


def rotate_key(
    purpose: str = "signing", keys_dir: str | os.PathLike[str] | None = None
) -> KeyRotation:
    """Replace the private key of ``purpose`` by a new one; old public keys stay trusted.

    The result's JSON keys: ``purpose``, ``old_fingerprint``, ``new_fingerprint``,
    ``private_key``, ``keyring``.
    """
    path = private_key_path(purpose, keys_dir)
    old = None
    if path.exists():
        old = load_private_key(purpose, keys_dir, create=False)[1]
    _check_private_location(path)
    _new_private_key(path, replace=True)
    new = load_private_key(purpose, keys_dir, create=False)[1]
    return KeyRotation(
        passed=True,
        purpose=purpose,
        old_fingerprint=old,
        new_fingerprint=new,
        private_key=str(path),
        keyring=str(keyring_dir(keys_dir)),
    )


def public_keys(purpose: str = "signing", keys_dir=None) -> dict[str, Any]:
    """``{fingerprint: public key}`` of every trusted key of ``purpose`` (never a private key)."""
    _purpose(purpose)
    files = []
    ring = keyring_dir(keys_dir)
    if ring.is_dir():
        files += sorted(ring.glob(f"{purpose}-*.pub"))
    files.append(resolve_keys_dir(keys_dir) / f"{purpose}.pub")
    env = os.environ.get(ENV_PUBLIC_KEY)
    if purpose == "signing" and env and keys_dir is None:
        files.append(Path(env).expanduser())
    keys: dict[str, Any] = {}
    for f in files:
        try:
            key = serialization.load_pem_public_key(f.read_bytes())
        except FileNotFoundError:
            continue
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise IntegrityError(f"{f}: not a PEM public key") from None
        if isinstance(key, Ed25519PublicKey):
            keys[fingerprint(key)] = key
    return keys


# -- signing and verifying ----------------------------------------------------------------------
def sign_message(message: bytes, purpose: str = "signing", keys_dir=None, key=None) -> str:
    """``ed25519:<fingerprint>:<base64 signature>`` of ``message`` with the key of ``purpose``.

    ``key`` is a ``(private key, fingerprint)`` pair already loaded (the ledger's hot path).
    """
    priv, fp = key if key is not None else load_private_key(purpose, keys_dir)
    sig = base64.b64encode(priv.sign(message)).decode("ascii")
    return f"{SIG_SCHEME}:{fp}:{sig}"


def signature_fingerprint(signature: str) -> str | None:
    """The key fingerprint a signature names (``None`` for a legacy bare signature)."""
    parts = signature.split(":")
    return parts[1] if len(parts) == 3 and parts[0] == SIG_SCHEME else None


def verify_message(
    message: bytes,
    signature: Any,
    purpose: str = "signing",
    keys_dir=None,
    *,
    what: str = "signature",
    keys: dict[str, Any] | None = None,
) -> str:
    """Check ``signature`` over ``message`` against the keyring of ``purpose``; its fingerprint.

    Raises :class:`IntegrityError` naming ``what`` when the signature is malformed, names a key
    outside the keyring, or does not verify.
    """
    if not isinstance(signature, str) or not signature:
        raise IntegrityError(f"{what} is missing")
    ring = keys if keys is not None else public_keys(purpose, keys_dir)
    if not ring:
        raise IntegrityError(
            f"no {purpose} public key in {keyring_dir(keys_dir)}: cannot verify {what}",
            hint=f"copy the public keys there, or set {ENV_KEYRING}",
        )
    parts = signature.split(":")
    if len(parts) == 3 and parts[0] == SIG_SCHEME:
        fp, b64 = parts[1], parts[2]
        if fp not in ring:
            raise IntegrityError(
                f"{what} was made by key {fp[:16]!r}, which is not in the {purpose} keyring"
            )
        candidates = [(fp, ring[fp])]
    elif len(parts) == 1:  # a bare base64 signature (before fingerprints): any trusted key
        b64, candidates = parts[0], list(ring.items())
    else:
        raise IntegrityError(f"{what} is malformed")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise IntegrityError(f"{what} is not valid base64") from None
    # one encoding per signature: a flipped padding bit must not still verify
    if base64.b64encode(raw).decode("ascii") != b64 or len(raw) != 64:
        raise IntegrityError(f"{what} is malformed")
    for fp, key in candidates:
        try:
            key.verify(raw, message)
            return fp
        except InvalidSignature:
            continue
    raise IntegrityError(f"{what} does not verify")


def sign_digest(sha256_hex: str, keys_dir: str | os.PathLike[str] | None = None) -> str:
    """Signature of the ASCII hex digest with the artifact signing key (created on first use).

    It says only that the key signed these bytes, not whose artifact they are: a file and its
    digest signature can be copied together onto another model version. The registry therefore
    also requires a binding signature (:func:`sign_artifact`) for every artifact of a version.
    """
    return sign_message(sha256_hex.encode("ascii"), "signing", keys_dir)


#: Prefix of the binding statement; the version number changes whenever its fields do, so a
#: signature over an older statement is refused rather than read with the wrong fields.
ARTIFACT_STATEMENT_PREFIX = b"quantcli-artifact:v2:"


def artifact_statement(
    sha256_hex: str, *, name: str, version: str | int, run_id: str, path: str
) -> bytes:
    """The bytes a binding signature covers: the digest and whose artifact it is (model name,
    version, training run and artifact path), as canonical JSON."""
    body = {
        "model": name,
        "path": path,
        "run_id": run_id,
        "sha256": sha256_hex,
        "version": str(version),
    }
    return ARTIFACT_STATEMENT_PREFIX + json.dumps(
        body, sort_keys=True, separators=(",", ":")
    ).encode("utf-8")


def sign_artifact(
    sha256_hex: str,
    *,
    name: str,
    version: str | int,
    run_id: str,
    path: str,
    keys_dir: str | os.PathLike[str] | None = None,
) -> str:
    """Binding signature of an artifact: :func:`artifact_statement` with the signing key."""
    statement = artifact_statement(sha256_hex, name=name, version=version, run_id=run_id, path=path)
    return sign_message(statement, "signing", keys_dir)


def verify_artifact(
    sha256_hex: str,
    signature: str | None,
    *,
    name: str,
    version: str | int,
    run_id: str,
    path: str,
    keys_dir: str | os.PathLike[str] | None = None,
    keys: dict[str, Any] | None = None,
) -> str:
    """Check a binding signature (public keys only); the fingerprint that made it.

    Raises :class:`IntegrityError` when it is missing (the artifact was never bound to this
    version: signed before bindings existed, or copied from elsewhere) or does not verify for
    exactly this model, version, run, path and digest.
    """
    label = f"{path}: binding to {name} v{version}"
    if not signature:
        raise IntegrityError(
            f"{path}: not bound to {name} v{version} (no binding signature: signed before "
            "artifacts were bound to their version, or copied from another one); refusing it",
            hint="register the model again (qcli model train) so its files are bound to it",
        )
    statement = artifact_statement(sha256_hex, name=name, version=version, run_id=run_id, path=path)
    return verify_message(statement, signature, "signing", keys_dir, what=label, keys=keys)


def sign_file(path: str | os.PathLike[str], keys_dir=None) -> tuple[str, str]:
    """``(sha256, signature)`` of the file at ``path``."""
    digest = sha256_file(path)
    return digest, sign_digest(digest, keys_dir)


def verify_bytes(
    data: bytes,
    expected_sha256: str | None,
    signature: str | None,
    keys_dir: str | os.PathLike[str] | None = None,
    *,
    label: str = "artifact",
) -> str:
    """Check ``data`` against its recorded sha256 and signature (public keys only); the digest."""
    if not expected_sha256:
        raise IntegrityError(f"{label}: no sha256 recorded for this artifact; refusing to load it")
    if not signature:
        raise IntegrityError(f"{label}: artifact is unsigned; refusing to load it")
    digest = sha256_bytes(data)
    if digest != expected_sha256:
        raise IntegrityError(
            f"{label}: sha256 mismatch (recorded {expected_sha256[:12]}..., "
            f"file {digest[:12]}...): the artifact was modified"
        )
    try:
        verify_message(digest.encode("ascii"), signature, "signing", keys_dir)
    except IntegrityError as exc:
        raise IntegrityError(
            f"{label}: signature does not verify ({exc.message}); refusing to load it",
            hint=exc.hint,
        ) from None
    return digest


def read_verified(
    path: str | os.PathLike[str],
    expected_sha256: str | None,
    signature: str | None,
    keys_dir: str | os.PathLike[str] | None = None,
) -> tuple[bytes, str]:
    """``(bytes, sha256)`` of the file, read once and verified: load *these* bytes, not the path.

    Reading the file again by path after a check would let a concurrent writer swap it between
    the check and the load.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise IntegrityError(f"{p}: artifact missing") from None
    return data, verify_bytes(data, expected_sha256, signature, keys_dir, label=str(p))


def verify_file(
    path: str | os.PathLike[str],
    expected_sha256: str | None,
    signature: str | None,
    keys_dir: str | os.PathLike[str] | None = None,
) -> str:
    """Check a file against its recorded sha256 and signature; return the digest.

    Raises :class:`~quantcli.errors.IntegrityError` (exit code 1) when the file is missing, its
    digest differs, the signature is absent, or the signature does not verify.
    """
    p = Path(path)
    if not p.is_file():
        raise IntegrityError(f"{p}: artifact missing")
    if not expected_sha256:
        raise IntegrityError(f"{p}: no sha256 recorded for this artifact; refusing to load it")
    if not signature:
        raise IntegrityError(f"{p}: artifact is unsigned; refusing to load it")
    return read_verified(p, expected_sha256, signature, keys_dir)[1]
