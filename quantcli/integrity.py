"""Artifact integrity: sha256 digests and Ed25519 signatures.

Every artifact the serving path loads (LightGBM text models, ONNX graphs) has its sha256 recorded
in the registry and a detached Ed25519 signature over that digest. The key pair is created under
``$QCLI_HOME/keys`` on first use (``signing.key`` private, mode 0600; ``signing.pub`` public). A
deployment may ship only the public key (``QCLI_PUBLIC_KEY`` points at it) to verify.

Nothing in quantcli unpickles a model: the formats are LightGBM text, ONNX and plain NumPy arrays.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from quantcli import config
from quantcli.errors import IntegrityError

_PRIV = "signing.key"
_PUB = "signing.pub"
_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _keys_dir(keys_dir: str | os.PathLike[str] | None) -> Path:
    return Path(keys_dir) if keys_dir is not None else config.keys_dir()


def ensure_keypair(keys_dir: str | os.PathLike[str] | None = None) -> Path:
    """Create the Ed25519 key pair under ``keys_dir`` if missing; return the directory."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    d = _keys_dir(keys_dir)
    priv_path, pub_path = d / _PRIV, d / _PUB
    if priv_path.exists() and pub_path.exists():
        return d
    d.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    priv = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # write-then-rename so a concurrent first use never sees half a key
    tmp = priv_path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(priv)
    os.chmod(tmp, 0o600)
    if not priv_path.exists():
        os.replace(tmp, priv_path)
        pub_tmp = pub_path.with_suffix(f".tmp{os.getpid()}")
        pub_tmp.write_bytes(pub)
        os.replace(pub_tmp, pub_path)
    else:
        tmp.unlink()
    return d


def _public_key(keys_dir: str | os.PathLike[str] | None):
    from cryptography.hazmat.primitives import serialization

    env = os.environ.get("QCLI_PUBLIC_KEY")
    path = Path(env) if env and keys_dir is None else _keys_dir(keys_dir) / _PUB
    try:
        return serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise IntegrityError(
            f"no public key at {path}: cannot verify signatures",
            hint="sign artifacts first (qcli model train creates the key pair), "
            "or set QCLI_PUBLIC_KEY",
        ) from None


def sign_digest(sha256_hex: str, keys_dir: str | os.PathLike[str] | None = None) -> str:
    """Base64 Ed25519 signature of the ASCII hex digest (created keys on first use)."""
    from cryptography.hazmat.primitives import serialization

    d = ensure_keypair(keys_dir)
    key = serialization.load_pem_private_key((d / _PRIV).read_bytes(), password=None)
    return base64.b64encode(key.sign(sha256_hex.encode("ascii"))).decode("ascii")


def sign_file(path: str | os.PathLike[str], keys_dir=None) -> tuple[str, str]:
    """``(sha256, signature)`` of the file at ``path``."""
    digest = sha256_file(path)
    return digest, sign_digest(digest, keys_dir)


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
    from cryptography.exceptions import InvalidSignature

    p = Path(path)
    if not p.is_file():
        raise IntegrityError(f"{p}: artifact missing")
    if not expected_sha256:
        raise IntegrityError(f"{p}: no sha256 recorded for this artifact; refusing to load it")
    if not signature:
        raise IntegrityError(f"{p}: artifact is unsigned; refusing to load it")
    digest = sha256_file(p)
    if digest != expected_sha256:
        raise IntegrityError(
            f"{p}: sha256 mismatch (recorded {expected_sha256[:12]}..., "
            f"file {digest[:12]}...): the artifact was modified"
        )
    try:
        _public_key(keys_dir).verify(base64.b64decode(signature), digest.encode("ascii"))
    except (InvalidSignature, ValueError):
        raise IntegrityError(f"{p}: signature does not verify; refusing to load it") from None
    return digest
