"""The model registry facade: versions, aliases, verdicts, signed artifacts, promotion, rollback.

quantcli uses MLflow's model registry with **aliases, not the deprecated stages**: a new version
gets alias ``staging`` (``qcli model train``); ``promote`` moves alias ``production``;
``rollback`` moves it back to the previous production version. The lifecycle record lives in tags
(names in :mod:`quantcli.models.tags`) and every promotion, override and rollback is also a row of
the offline-store table ``registry_events`` (:mod:`quantcli.models.events`).

Rules:

* **Gated promotion, with a floor.** ``promote`` requires every verdict of the policy to be
  ``pass`` *and fresh* on the version, and the version's artifacts to verify (sha256 + Ed25519
  signature). The policy is the built-in floor (``backtest``, ``parity``, ``scan``) plus any gate
  the config list ``[registry] required_verdicts`` adds: a config can add gates, never remove
  them. Otherwise :class:`~quantcli.errors.GateFailedError` (exit 1) lists the reasons and
  nothing changes. ``force=True`` with a ``reason`` overrides failed, missing or stale verdicts
  (never integrity) and is recorded as an ``override`` event with the reason, the OS user and
  the policy in force (``registry_events``, version tags, ``qcli model list``).
* **Verdicts bind to content.** A verdict records the sha256 of every artifact it judged, by
  *role* (the artifact path's first folder: ``model``, ``onnx``, ... plus ``dataset``, the
  dataset manifest): ``backtest`` judges ``model`` and ``dataset`` (the files registered with
  the training run), ``parity`` judges ``model`` and ``onnx``, ``scan`` and any other gate judge
  every role. The verdict, what it judged and when are signed with the signing key. Adding,
  replacing or removing an artifact of a judged role afterwards makes the verdict ``stale``
  (with the reason); an edited verdict tag is ``invalid``. Neither counts as ``pass``.
* **History.** The registered-model tag ``quantcli.production_history`` is the JSON list of
  previous production versions, oldest first. ``promote`` pushes the outgoing version (tagged
  ``archived``); ``rollback`` pops the last one, so repeated rollbacks walk the history.
* **One writer at a time.** ``promote`` and ``rollback`` hold an exclusive file lock
  (``$QCLI_HOME/locks/registry-<name>.lock``) around read-modify-write of aliases, tags and
  history, so two concurrent processes leave exactly one consistent ``production`` alias. (The
  lock is per ``$QCLI_HOME``: processes on several hosts sharing one MLflow server must share it.)
* **Integrity.** Every artifact a version serves is signed when it is added
  (:meth:`ModelRegistry.add_artifact`); its sha256 and signature are version tags.
  :meth:`ModelRegistry.load_native_model` and :meth:`ModelRegistry.download_artifacts`
  (``verify=True``) refuse a modified, unsigned or unexpected file with
  :class:`~quantcli.errors.IntegrityError` (exit 1). Nothing is unpickled.

MLflow is imported lazily (inside :class:`ModelRegistry`), so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quantcli import config, integrity
from quantcli.errors import GateFailedError, InputError, IntegrityError, NotFoundError
from quantcli.models import tags as T
from quantcli.models.events import RegistryEvent, insert_event
from quantcli.workspace import Workspace

MODEL_ARTIFACT_PATH = "model"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


def check_model_name(name: str) -> str:
    """``name`` if it is a valid registered-model name, else :class:`InputError` (exit 2)."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InputError(
            f"invalid model name `--name {name!r}`",
            hint="use letters, digits, '_', '.', '-' (at most 100 characters), e.g. momentum_lgbm",
        )
    return name


#: The built-in gates every promotion requires: a config can add gates, never remove these.
GATE_FLOOR: tuple[str, ...] = T.GATES
#: The artifact roles each gate judges; a gate not listed judges every role ("*").
GATE_ROLES: dict[str, tuple[str, ...]] = {
    "backtest": ("model", "dataset"),
    "parity": ("model", "onnx"),
}
_GATE_RE = re.compile(r"^[a-z_]{1,64}$")


def gate_policy(cfg: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """``{"floor", "config", "required"}``: the built-in gates, the config's list, their union.

    ``required`` is the floor followed by the gates the config adds, in config order.
    """
    section = (cfg or config.DEFAULTS).get("registry") or {}
    listed = section.get("required_verdicts", list(GATE_FLOOR))
    if not isinstance(listed, list | tuple):
        raise InputError(f"[registry] required_verdicts must be a list, got {listed!r}")
    gates = list(listed)
    bad = [g for g in gates if not isinstance(g, str) or not _GATE_RE.match(g)]
    if bad:
        raise InputError(
            f"[registry] required_verdicts has invalid gate names {bad}",
            hint=f"known gates: {', '.join(T.GATES)}",
        )
    required = list(GATE_FLOOR) + [g for g in dict.fromkeys(gates) if g not in GATE_FLOOR]
    return {"floor": list(GATE_FLOOR), "config": gates, "required": required}


def required_verdicts(cfg: dict[str, Any] | None = None) -> list[str]:
    """The gates ``promote`` requires: the built-in floor plus what the config adds."""
    return gate_policy(cfg)["required"]


def with_floor(required: list[str] | None) -> list[str]:
    """``required`` raised to the floor (an API caller cannot lower it either)."""
    if required is None:
        return list(GATE_FLOOR)
    return gate_policy({"registry": {"required_verdicts": list(required)}})["required"]


def artifact_role(artifact_path: str) -> str:
    """The role of an artifact: the first folder of its path (``model``, ``onnx``, ...)."""
    return artifact_path.split("/", 1)[0]


def judged_snapshot(
    gate: str, artifacts: dict[str, str], dataset_sha256: str | None
) -> dict[str, Any]:
    """What a verdict of ``gate`` judges: ``{"roles", "artifacts": {path: sha256}, "dataset"}``.

    ``artifacts`` maps every artifact path of the version to its sha256; only the gate's roles
    are kept (:data:`GATE_ROLES`; every role for other gates).
    """
    roles = GATE_ROLES.get(gate)
    keep = {
        path: sha
        for path, sha in sorted(artifacts.items())
        if roles is None or artifact_role(path) in roles
    }
    judges_dataset = roles is None or "dataset" in roles
    return {
        "roles": sorted(roles) if roles is not None else ["*"],
        "artifacts": keep,
        "dataset": dataset_sha256 if judges_dataset else None,
    }


def verdict_statement(
    name: str, version: str, gate: str, verdict: str, reasons: str, at: str, judged: str
) -> bytes:
    """The bytes the signing key signs for a verdict (all fields as stored in the tags)."""
    body = {
        "at": at,
        "gate": gate,
        "judged": judged,
        "model": name,
        "reasons_sha256": integrity.sha256_bytes(reasons.encode("utf-8")),
        "verdict": verdict,
        "version": str(version),
    }
    return b"quantcli-verdict:v1:" + json.dumps(body, sort_keys=True).encode("utf-8")


def verdict_state(info: ModelVersionInfo, gate: str, keys: dict[str, Any]) -> dict[str, Any]:
    """``{"verdict", "status", "reasons"}`` of ``gate`` on ``info``.

    ``status``: ``pass`` (signed, and nothing it judged changed since), ``fail``, ``stale`` (a
    pass, but an artifact of a judged role was added, replaced or removed since, the dataset
    manifest changed, or the verdict predates content binding), ``invalid`` (the verdict tags
    were edited: the signature does not verify) or ``missing``.
    """
    tags = info.tags
    verdict = tags.get(T.verdict_tag(gate))
    if verdict is None:
        return {"verdict": None, "status": "missing", "reasons": []}
    judged_raw, sig = tags.get(T.judged_tag(gate)), tags.get(T.verdict_sig_tag(gate))
    if (judged_raw is None or sig is None) and verdict != T.PASS:
        return {"verdict": verdict, "status": verdict, "reasons": []}
    if judged_raw is None or sig is None:
        return {
            "verdict": verdict,
            "status": "stale",
            "reasons": [
                f"verdict '{gate}' records no hashes of what it judged (recorded before "
                "verdicts were bound to content): record it again"
            ],
        }
    statement = verdict_statement(
        info.name,
        info.version,
        gate,
        verdict,
        tags.get(T.reasons_tag(gate), ""),
        tags.get(T.verdict_at_tag(gate), ""),
        judged_raw,
    )
    try:
        integrity.verify_message(statement, sig, "signing", keys=keys, what=f"verdict '{gate}'")
        judged = json.loads(judged_raw)
        roles, then, dataset = judged["roles"], dict(judged["artifacts"]), judged["dataset"]
    except (IntegrityError, ValueError, KeyError, TypeError) as exc:
        why = exc.message if isinstance(exc, IntegrityError) else "unreadable judged hashes"
        return {
            "verdict": verdict,
            "status": "invalid",
            "reasons": [f"verdict '{gate}' is not the one its gate recorded ({why})"],
        }
    if verdict != T.PASS:  # a failed verdict fails whatever changed since
        return {"verdict": verdict, "status": verdict, "reasons": [], "judged": then}
    now = {
        path: rec.get("sha256", "")
        for path, rec in info.artifacts.items()
        if roles == ["*"] or artifact_role(path) in roles
    }
    reasons = []
    for path in sorted(set(then) | set(now)):
        if path not in now:
            reasons.append(f"{path} was removed after the '{gate}' verdict")
        elif path not in then:
            reasons.append(f"{path} was added after the '{gate}' verdict judged its role")
        elif then[path] != now[path]:
            reasons.append(
                f"{path} was replaced after the '{gate}' verdict (judged sha256 "
                f"{then[path][:12]}..., now {now[path][:12]}...)"
            )
    if ("dataset" in roles or roles == ["*"]) and dataset != tags.get(T.DATASET_SHA256):
        reasons.append(f"the dataset manifest changed after the '{gate}' verdict")
    if reasons:
        return {"verdict": verdict, "status": "stale", "reasons": reasons}
    return {"verdict": verdict, "status": verdict, "reasons": [], "judged": then}


def quiet_mlflow() -> None:
    """No artifact progress bars or INFO chatter from MLflow on the user's terminal."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # an unreachable --tracking-uri should fail in seconds, not after minutes of retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    _request_headers_without_feast()


#: MLflow request-header plugins quantcli does not load (entry point value prefixes).
IGNORED_HEADER_PLUGINS = ("feast.",)


def _request_headers_without_feast() -> None:
    """Load MLflow's request-header plugins except Feast's, before MLflow loads them all.

    Feast registers an ``mlflow.request_header_provider`` entry point. MLflow loads every such
    plugin on its first HTTP request, which imports all of Feast (measured: 8.4 s added to every
    ``qcli model ...`` call against a tracking server) and lets Feast attach a bearer token --
    from a Kubernetes service-account file, say -- to quantcli's MLflow requests. quantcli
    imports MLflow's registry module once with the entry-point lookup filtered, so those
    plugins are never loaded; every other plugin still is.
    """
    import sys

    name = "mlflow.tracking.request_header.registry"
    if name in sys.modules:
        return
    import importlib

    import mlflow.utils.plugins as plugins

    lookup = plugins.get_entry_points

    def filtered(group: str):
        found = lookup(group)
        if group != "mlflow.request_header_provider":
            return found
        return [ep for ep in found if not ep.value.startswith(IGNORED_HEADER_PLUGINS)]

    plugins.get_entry_points = filtered
    try:
        importlib.import_module(name)
    finally:
        plugins.get_entry_points = lookup


def is_local_store(tracking_uri: str) -> bool:
    """True for the embedded store (``sqlite:`` or another database URI), False for a server."""
    return not tracking_uri.startswith(("http://", "https://", "databricks"))


@dataclass
class ModelVersionInfo:
    """One registered model version, as quantcli sees it.

    Attributes
    ----------
    artifacts
        ``{artifact_path: {"sha256": ..., "signature": ...}}`` for every signed artifact, paths
        relative to the run's artifact root (e.g. ``model/lgbm.txt``, ``onnx/model.onnx``).
    verdicts
        ``{gate: "pass" | "fail"}`` for every recorded gate verdict.
    """

    name: str
    version: str
    run_id: str
    source: str
    created_at: str
    tags: dict[str, str]
    aliases: list[str]
    artifacts: dict[str, dict[str, str]] = field(default_factory=dict)
    verdicts: dict[str, str] = field(default_factory=dict)
    verdict_states: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def status(self) -> str | None:
        return self.tags.get(T.STATUS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "source": self.source,
            "created_at": self.created_at,
            "aliases": self.aliases,
            "status": self.status,
            "verdicts": self.verdicts,
            "verdict_states": self.verdict_states,
            "override": self.tags.get(T.OVERRIDE) == "true",
            "override_detail": _json_or_none(self.tags.get(T.OVERRIDE_DETAIL)),
            "dataset_sha256": self.tags.get(T.DATASET_SHA256),
            "feature_set": self.tags.get(T.FEATURE_SET),
            "feature_set_version": self.tags.get(T.FEATURE_SET_VERSION),
            "model_kind": self.tags.get(T.MODEL_KIND),
            "artifacts": self.artifacts,
            "tags": self.tags,
        }


def _json_or_none(raw: str | None) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _info_from(mv: Any, aliases: list[str]) -> ModelVersionInfo:
    tags = dict(mv.tags or {})
    artifacts: dict[str, dict[str, str]] = {}
    for key, value in tags.items():
        if key.startswith(T.SHA256_PREFIX):
            path = key[len(T.SHA256_PREFIX) :]
            artifacts.setdefault(path, {})["sha256"] = value
        elif key.startswith(T.SIGNATURE_PREFIX):
            path = key[len(T.SIGNATURE_PREFIX) :]
            artifacts.setdefault(path, {})["signature"] = value
    verdicts = {
        key[len(T.VERDICT_PREFIX) :]: value
        for key, value in tags.items()
        if key.startswith(T.VERDICT_PREFIX)
    }
    created = datetime.fromtimestamp((mv.creation_timestamp or 0) / 1000, UTC).isoformat()
    return ModelVersionInfo(
        name=mv.name,
        version=str(mv.version),
        run_id=mv.run_id or "",
        source=mv.source or "",
        created_at=created,
        tags=tags,
        aliases=sorted(aliases),
        artifacts=dict(sorted(artifacts.items())),
        verdicts=dict(sorted(verdicts.items())),
    )


@contextmanager
def registry_lock(name: str) -> Iterator[None]:
    """An exclusive inter-process lock for read-modify-write of model ``name``'s aliases."""
    lock_dir = config.qcli_home(create=True) / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"registry-{name}.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _statuses(info: ModelVersionInfo) -> dict[str, str]:
    """``{gate: pass | fail | stale | invalid}`` of every recorded verdict."""
    return {g: st["status"] for g, st in info.verdict_states.items() if st["status"] != "missing"}


def _registered_statement(name: str, version: str | int, snapshot_json: str) -> bytes:
    return f"quantcli-registered:v1:{name}:{version}:".encode() + snapshot_json.encode("utf-8")


def _now() -> str:
    return datetime.now(UTC).isoformat()


class ModelRegistry:
    """quantcli's view of the MLflow model registry of a workspace.

    Parameters
    ----------
    workspace
        Whose tracking store (``workspace.tracking_uri``); default :meth:`Workspace.from_env`
        (``MLFLOW_TRACKING_URI`` or the embedded ``sqlite:///$QCLI_HOME/mlflow.db``, artifacts
        under ``$QCLI_HOME/mlartifacts``). A string is taken as a tracking URI.
    tracking_uri
        Deprecated alias: ``--tracking-uri``, with the rest of the workspace from the
        environment.
    """

    def __init__(
        self, workspace: Workspace | str | None = None, *, tracking_uri: str | None = None
    ) -> None:
        quiet_mlflow()
        from mlflow import MlflowClient

        quiet_mlflow()  # importing mlflow resets its logger to INFO

        if isinstance(workspace, str):  # the older positional tracking URI
            workspace, tracking_uri = None, workspace
        if workspace is None:
            workspace = Workspace.from_env(tracking_uri=tracking_uri)
        elif tracking_uri is not None:
            workspace = dataclasses.replace(workspace, tracking_uri=tracking_uri)
        self.workspace = workspace
        self.tracking_uri = self.workspace.tracking_uri
        if is_local_store(self.tracking_uri):
            self.workspace.home.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    # -- reading ------------------------------------------------------------------------------
    def _not_found(self, exc: Exception) -> bool:
        code = getattr(exc, "error_code", "")
        return code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")

    def alias_map(self, name: str) -> dict[str, str]:
        """``{alias: version}`` of registered model ``name`` (NotFoundError if unknown)."""
        from mlflow.exceptions import MlflowException

        try:
            rm = self.client.get_registered_model(name)
        except MlflowException as exc:
            if self._not_found(exc):
                raise NotFoundError(
                    f"no registered model '{name}' in {self.tracking_uri}",
                    hint="train one: qcli model train --name NAME",
                ) from None
            raise
        return {alias: str(v) for alias, v in (rm.aliases or {}).items()}

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version that ``alias`` points at, or ``None``."""
        return self.alias_map(name).get(alias)

    def _versions(self, name: str) -> list[Any]:
        check_model_name(name)
        mvs = self.client.search_model_versions(f"name = '{name}'")
        return sorted(mvs, key=lambda mv: int(mv.version))

    def resolve(
        self, name: str, version: str | int | None = None, alias: str | None = None
    ) -> ModelVersionInfo:
        """The version ``version``, or the one ``alias`` points at, or the latest version."""
        from mlflow.exceptions import MlflowException

        check_model_name(name)
        aliases = self.alias_map(name)
        if version is not None and alias is not None:
            raise InputError("give either --version or --alias, not both")
        if alias is not None:
            if alias not in aliases:
                raise NotFoundError(
                    f"model '{name}' has no alias '{alias}'",
                    hint=f"aliases: {', '.join(sorted(aliases)) or 'none'}",
                )
            version = aliases[alias]
        if version is None:
            mvs = self._versions(name)
            if not mvs:
                raise NotFoundError(f"model '{name}' has no versions")
            version = mvs[-1].version
        if not str(version).isdigit():
            raise InputError(f"`--version {version}` must be a positive integer")
        try:
            mv = self.client.get_model_version(name, str(version))
        except MlflowException as exc:
            if self._not_found(exc):
                raise NotFoundError(
                    f"model '{name}' has no version {version}",
                    hint=f"see: qcli model list {name}",
                ) from None
            raise
        mine = [a for a, v in aliases.items() if v == str(mv.version)]
        info = _info_from(mv, mine)
        info.verdict_states = self.verdict_states(info)
        return info

    def list_versions(self, name: str) -> list[ModelVersionInfo]:
        """Every version of ``name``, oldest first, with aliases and verdicts."""
        aliases = self.alias_map(name)
        out = []
        for mv in self._versions(name):
            # search results may omit tags/aliases: re-read each version
            full = self.client.get_model_version(name, mv.version)
            info = _info_from(full, [a for a, v in aliases.items() if v == str(mv.version)])
            info.verdict_states = self.verdict_states(info)
            out.append(info)
        return out

    def production_history(self, name: str) -> list[str]:
        """Previous production versions, oldest first (the rollback stack)."""
        rm = self.client.get_registered_model(name)
        raw = (rm.tags or {}).get(T.PRODUCTION_HISTORY)
        return [str(v) for v in json.loads(raw)] if raw else []

    # -- writing tags and artifacts -----------------------------------------------------------
    def set_version_tags(self, name: str, version: str | int, values: dict[str, Any]) -> None:
        """Set tags on a version (values are stringified; dicts/lists as JSON)."""
        for key, value in values.items():
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            self.client.set_model_version_tag(name, str(version), key, text)

    def record_verdict(
        self,
        name: str,
        version: str | int,
        gate: str,
        passed: bool,
        reasons: list[str],
        *,
        judged: dict[str, str] | None = None,
    ) -> None:
        """Record gate ``gate``'s verdict (``pass``/``fail``), failed criteria and what it judged.

        ``judged`` maps the artifact paths the gate actually examined to their sha256 (``qcli
        model scan`` passes the files it scanned); by default the version's recorded artifacts of
        the gate's roles at this moment. The verdict is signed with the signing key (see the
        module docstring). ``qcli model export`` records ``parity`` and ``scan`` records ``scan``
        this way.
        """
        if not isinstance(gate, str) or not _GATE_RE.match(gate):
            raise InputError(f"`gate` must be a lower-case name, got `gate={gate!r}`")
        info = self.resolve(name, version)
        current = {p: a.get("sha256", "") for p, a in info.artifacts.items()}
        if judged is not None:
            current = dict(judged)
        snapshot = judged_snapshot(gate, current, info.tags.get(T.DATASET_SHA256))
        self._record_signed_verdict(info, gate, passed, reasons, snapshot)

    def _record_signed_verdict(
        self,
        info: ModelVersionInfo,
        gate: str,
        passed: bool,
        reasons: list[str],
        snapshot: dict[str, Any],
    ) -> None:
        verdict = T.PASS if passed else T.FAIL
        reasons_json = json.dumps(list(reasons), sort_keys=True)
        at = _now()
        judged = json.dumps(snapshot, sort_keys=True, separators=(",", ":"))
        statement = verdict_statement(
            info.name, info.version, gate, verdict, reasons_json, at, judged
        )
        sig = integrity.sign_message(statement, "signing")
        self.set_version_tags(
            info.name,
            info.version,
            {
                T.verdict_tag(gate): verdict,
                T.reasons_tag(gate): reasons_json,
                T.verdict_at_tag(gate): at,
                T.judged_tag(gate): judged,
                T.verdict_sig_tag(gate): sig,
            },
        )

    def verdict_states(self, info: ModelVersionInfo) -> dict[str, dict[str, Any]]:
        """:func:`verdict_state` of every recorded gate and every floor gate of ``info``."""
        keys = integrity.public_keys("signing")
        gates = sorted(set(info.verdicts) | set(GATE_FLOOR))
        return {g: verdict_state(info, g, keys) for g in gates}

    def add_artifact(
        self, name: str, version: str | int, local_path: str | os.PathLike[str], artifact_path: str
    ) -> dict[str, str]:
        """Sign ``local_path``, log it to the version's run at ``artifact_path``, record the tags.

        ``artifact_path`` is the file's path relative to the run's artifact root, e.g.
        ``onnx/model.onnx``. Returns ``{"sha256": ..., "signature": ...}``.
        """
        info = self.resolve(name, version)
        local = Path(local_path)
        if not local.is_file():
            raise InputError(f"{local}: no such file to add as an artifact")
        if Path(artifact_path).name != local.name:
            raise InputError(
                f"artifact_path {artifact_path!r} must end with the file name {local.name!r}"
            )
        digest, signature = integrity.sign_file(local)
        parent = str(Path(artifact_path).parent)
        self.client.log_artifact(info.run_id, str(local), None if parent == "." else parent)
        self.set_version_tags(
            name,
            info.version,
            {T.sha256_tag(artifact_path): digest, T.signature_tag(artifact_path): signature},
        )
        return {"sha256": digest, "signature": signature}

    def download_artifacts(
        self,
        name: str,
        version: str | int | None = None,
        artifact_path: str = MODEL_ARTIFACT_PATH,
        dst: str | os.PathLike[str] | None = None,
        *,
        alias: str | None = None,
        verify: bool = True,
    ) -> tuple[Path, ModelVersionInfo]:
        """Download ``artifact_path`` (a file or folder) of a version into ``dst``.

        With ``verify`` every downloaded file must have a recorded sha256 and signature that
        verify; an unexpected (unsigned) file is refused too. Returns ``(local_path, info)``.
        """
        info = self.resolve(name, version, alias)
        dst_dir = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="qcli-model-"))
        dst_dir.mkdir(parents=True, exist_ok=True)
        local = Path(self.client.download_artifacts(info.run_id, artifact_path, str(dst_dir)))
        if verify:
            self.verify_downloaded(info, local, artifact_path)
        return local, info

    def verify_downloaded(self, info: ModelVersionInfo, local: Path, artifact_path: str) -> None:
        """Check every file under ``local`` (downloaded from ``artifact_path``) against the tags."""
        files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
        if not files:
            raise IntegrityError(f"{info.name} v{info.version}: no files under {artifact_path!r}")
        for f in files:
            rel = (
                artifact_path
                if local.is_file()
                else f"{artifact_path.rstrip('/')}/{f.relative_to(local).as_posix()}"
            )
            rec = info.artifacts.get(rel)
            if rec is None:
                raise IntegrityError(
                    f"{info.name} v{info.version}: artifact {rel!r} has no recorded sha256/"
                    "signature; refusing to load it"
                )
            try:
                integrity.verify_file(f, rec.get("sha256"), rec.get("signature"))
            except IntegrityError as exc:
                raise IntegrityError(
                    f"{info.name} v{info.version}: {rel}: {exc.message.split(': ', 1)[-1]}"
                ) from None
        if local.is_dir():  # every signed file of the folder must have come down
            prefix = artifact_path.rstrip("/") + "/"
            expected = {p for p in info.artifacts if p.startswith(prefix)}
            got = {f"{prefix}{f.relative_to(local).as_posix()}" for f in files}
            missing = sorted(expected - got)
            if missing:
                raise IntegrityError(f"{info.name} v{info.version}: artifacts missing: {missing}")

    def load_native_model(
        self, name: str, version: str | int | None = None, *, alias: str | None = None
    ):
        """Download, verify (sha256 + signature) and load a version's native model (no pickle).

        Returns ``(model, info)``; ``model`` is a :class:`quantcli.models.serialize.NativeModel`.
        """
        from quantcli.models.serialize import load_model

        tmp = tempfile.mkdtemp(prefix="qcli-model-")
        try:
            local, info = self.download_artifacts(
                name, version, MODEL_ARTIFACT_PATH, tmp, alias=alias
            )
            return load_model(local), info
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _verify_all(self, info: ModelVersionInfo) -> None:
        """Download every recorded artifact folder of ``info`` and verify each file."""
        tmp = tempfile.mkdtemp(prefix="qcli-verify-")
        try:
            roots = sorted({artifact_role(p) for p in info.artifacts} | {MODEL_ARTIFACT_PATH})
            for root in roots:
                self.download_artifacts(info.name, info.version, root, Path(tmp) / root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _verify_model(self, name: str, version: str) -> None:
        """Download the version's ``model/`` files and verify them (IntegrityError if not)."""
        tmp = tempfile.mkdtemp(prefix="qcli-verify-")
        try:
            self.download_artifacts(name, version, MODEL_ARTIFACT_PATH, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- gates ----------------------------------------------------------------------------------
    def gate_reasons(self, info: ModelVersionInfo, required: list[str]) -> list[str]:
        """Why ``info`` may not be promoted under ``required`` (empty when every gate passes).

        A gate passes only when its verdict is ``pass``, signed, and nothing it judged changed.
        """
        reasons: list[str] = []
        hints = {
            "backtest": f"run: qcli model validate {info.name} --version {info.version}",
            "parity": f"run: qcli model export {info.name} --version {info.version}",
            "scan": f"run: qcli model scan {info.name} --version {info.version}",
        }
        states = info.verdict_states or self.verdict_states(info)
        for gate in required:
            state = states.get(gate) or {"status": "missing", "reasons": []}
            status = state["status"]
            if status == "missing":
                reasons.append(
                    f"verdict '{gate}' not recorded ({hints.get(gate, 'record it first')})"
                )
            elif status == "fail":
                failed = info.tags.get(T.reasons_tag(gate))
                detail = "; ".join(_json_or_none(failed) or []) or "no reasons recorded"
                reasons.append(f"verdict '{gate}' is fail: {detail}")
            elif status != T.PASS:
                again = hints.get(gate, "record it again")
                reasons.append(
                    f"verdict '{gate}' is {status}: " + "; ".join(state["reasons"]) + f" ({again})"
                )
        return reasons

    def validate(
        self, name: str, version: str | int | None = None, *, required: list[str] | None = None
    ) -> dict[str, Any]:
        """Check a version's model bytes, record its backtest verdict, report every gate.

        The model files are downloaded and verified first (sha256 + signature). The ``backtest``
        verdict is the CPCV verdict its training run recorded (tags ``quantcli.backtest.verdict``
        / ``quantcli.backtest.reasons``), bound to the model files and dataset manifest
        registered with that run; ``parity`` and ``scan`` are read from the version as ``qcli
        model export`` / ``qcli model scan`` recorded them, and shown ``stale`` when an artifact
        they judged changed since. ``required`` defaults to the policy (floor + config).
        ``version`` defaults to the ``staging`` version, else the latest.

        Raises :class:`GateFailedError` (exit 1, ``result`` attached) unless every required
        verdict is ``pass`` and fresh; the backtest verdict is recorded either way.
        """
        required = list(required) if required is not None else required_verdicts()
        info = self.resolve(name, self.candidate_version(name, version)[0])
        if not info.run_id:
            raise NotFoundError(f"{name} v{info.version} has no training run to validate")
        self._verify_model(name, info.version)
        run = self.client.get_run(info.run_id)
        verdict = run.data.tags.get("quantcli.backtest.verdict")
        if verdict not in T.VERDICT_VALUES:
            run_reasons = [f"training run {info.run_id} recorded no CPCV backtest verdict"]
            verdict = T.FAIL
        else:
            run_reasons = _json_or_none(run.data.tags.get("quantcli.backtest.reasons")) or []
        registered = self._registered_snapshot(info)
        if registered is None:  # registered before the registration record existed
            registered = {p: a.get("sha256", "") for p, a in info.artifacts.items()}
            dataset = info.tags.get(T.DATASET_SHA256)
        else:
            registered, dataset = registered["artifacts"], registered["dataset"]
        snapshot = judged_snapshot("backtest", registered, dataset)
        self._record_signed_verdict(info, "backtest", verdict == T.PASS, run_reasons, snapshot)
        info = self.resolve(name, info.version)
        reasons = self.gate_reasons(info, required)
        metrics = {
            k[len("backtest_") :]: v
            for k, v in sorted(run.data.metrics.items())
            if k.startswith("backtest_")
        }
        result = {
            "name": name,
            "version": info.version,
            "passed": not reasons,
            "required_verdicts": required,
            "verdicts": _statuses(info),
            "verdict_states": info.verdict_states,
            "reasons": reasons,
            "backtest_metrics": metrics,
        }
        if reasons:
            raise GateFailedError(
                f"{name} v{info.version} did not pass validation", reasons=reasons, result=result
            )
        return result

    def _registered_snapshot(self, info: ModelVersionInfo) -> dict[str, Any] | None:
        """The signed record of the files registered with the training run (None if absent)."""
        raw, sig = info.tags.get(T.REGISTERED), info.tags.get(T.REGISTERED_SIG)
        if raw is None and sig is None:
            return None
        try:
            integrity.verify_message(
                _registered_statement(info.name, info.version, raw or ""),
                sig,
                "signing",
                what="the registration record",
            )
            snap = json.loads(raw or "")
            return {"artifacts": dict(snap["artifacts"]), "dataset": snap["dataset"]}
        except (IntegrityError, ValueError, KeyError, TypeError) as exc:
            why = exc.message if isinstance(exc, IntegrityError) else "unreadable"
            raise IntegrityError(
                f"{info.name} v{info.version}: the registration record of its model files was "
                f"edited ({why}); refusing to bind a backtest verdict to it"
            ) from None

    # -- lifecycle ------------------------------------------------------------------------------
    def candidate_version(self, name: str, version: str | int | None = None) -> tuple[str, str]:
        """The version a gate command acts on, and how it was chosen.

        ``version`` when given (``"--version"``), else the one behind ``@staging`` -- the
        candidate ``qcli model train`` registered, which validate, export, scan and promote
        must all judge alike -- (``"@staging"``), else the latest (``"latest"``).
        """
        if version is not None:
            return str(self.resolve(name, version).version), "--version"
        staged = self.alias_version(name, T.ALIAS_STAGING)
        if staged is not None:
            return staged, "@staging"
        return str(self.resolve(name).version), "latest"

    def _default_version(self, name: str, version: str | int | None) -> str:
        if version is None and self.alias_version(name, T.ALIAS_STAGING) is None:
            raise NotFoundError(
                f"model '{name}' has no 'staging' version to promote",
                hint="give --version V, or train one: qcli model train --name NAME",
            )
        return self.candidate_version(name, version)[0]

    def promote(
        self,
        name: str,
        version: str | int | None = None,
        *,
        force: bool = False,
        reason: str | None = None,
        required: list[str] | None = None,
        store_path: str | os.PathLike[str] | None = None,
    ) -> dict[str, Any]:
        """Move alias ``production`` to ``version`` (default: the ``staging`` version).

        Raises
        ------
        GateFailedError
            A required verdict is missing or not ``pass`` (and not ``force``); nothing changed.
        IntegrityError
            An artifact of the version does not verify (``force`` does not override this).
        InputError
            ``force`` without a ``reason``.
        """
        check_model_name(name)
        if force and not (reason and reason.strip()):
            raise InputError(
                "--force needs --reason: a governance override must say why",
                hint='e.g. --force --reason "risk committee approved, ticket RISK-123"',
            )
        requested = list(required) if required is not None else required_verdicts()
        required = with_floor(requested)
        policy = {"floor": list(GATE_FLOOR), "requested": requested, "required": required}
        target = self._default_version(name, version)
        info = self.resolve(name, target)
        # integrity is not a gate a human may override: a tampered artifact is never promoted
        self._verify_all(info)
        reasons = self.gate_reasons(info, required)
        result: dict[str, Any] = {
            "name": name,
            "version": target,
            "required_verdicts": required,
            "policy": policy,
            "verdicts": _statuses(info),
            "reasons": reasons,
            "forced": bool(force and reasons),
        }
        if reasons and not force:
            result["promoted"] = False
            raise GateFailedError(
                f"promotion of {name} v{target} refused: {len(reasons)} gate(s) not passed",
                reasons=reasons,
                result=result,
                hint="fix the gates, or override with --force --reason '...' (recorded)",
            )
        with registry_lock(name):
            previous = self.alias_version(name, T.ALIAS_PRODUCTION)
            if previous == target:
                result.update(promoted=False, previous_version=previous, event=None)
                result["message"] = f"{name} v{target} is already production"
                return result
            history = self.production_history(name)
            if previous is not None:
                history.append(previous)
            action = "override" if result["forced"] else "promote"
            event = RegistryEvent(
                action=action,
                model_name=name,
                from_version=previous,
                to_version=target,
                reason=reason or ("; ".join(reasons) if reasons else "all required gates passed"),
                tracking_uri=self.tracking_uri,
                forced=result["forced"],
                details={
                    "required_verdicts": required,
                    "policy": policy,
                    "verdicts": result["verdicts"],
                    "gate_reasons": reasons,
                    "overridden": reasons if result["forced"] else [],
                    "history": history,
                },
            )
            self._apply(event, history, changes=self._promote_changes(event), store_path=store_path)
        result.update(promoted=True, previous_version=previous, history=history)
        result["event"] = event.to_dict()
        return result

    def _promote_changes(self, event: RegistryEvent):
        def apply() -> None:
            name, target, previous = event.model_name, event.to_version, event.from_version
            self.client.set_registered_model_alias(name, T.ALIAS_PRODUCTION, target)
            self.set_version_tags(
                name,
                target,
                {
                    T.STATUS: T.STATUS_PRODUCTION,
                    T.PROMOTED_BY: event.actor,
                    T.PROMOTED_AT: event.ts.isoformat(),
                    T.PROMOTION_REASON: event.reason or "",
                    T.OVERRIDE: "true" if event.forced else "false",
                    T.OVERRIDE_DETAIL: {
                        "reason": event.reason,
                        "os_user": event.actor,
                        "at": event.ts.isoformat(),
                        "policy": event.details.get("policy"),
                        "overridden": event.details.get("overridden", []),
                    }
                    if event.forced
                    else "",
                    T.LAST_EVENT: event.to_tag(),
                },
            )
            if previous is not None:
                self.set_version_tags(
                    name, previous, {T.STATUS: T.STATUS_ARCHIVED, T.LAST_EVENT: event.to_tag()}
                )

        return apply

    def rollback(
        self,
        name: str,
        *,
        reason: str | None = None,
        store_path: str | os.PathLike[str] | None = None,
    ) -> dict[str, Any]:
        """Move ``production`` back to the previous production version, in one step.

        Raises :class:`NotFoundError` (exit 2) when there is no previous production version, and
        :class:`IntegrityError` (exit 1) when its artifacts do not verify; nothing changes then.
        """
        check_model_name(name)
        with registry_lock(name):
            current = self.alias_version(name, T.ALIAS_PRODUCTION)
            history = self.production_history(name)
            if not history:
                raise NotFoundError(
                    f"model '{name}' has no previous production version to roll back to",
                    hint=f"see the history: qcli model list {name}",
                )
            target = history.pop()
            # never roll back onto a modified artifact: serving would refuse it a moment later
            self._verify_model(name, target)
            event = RegistryEvent(
                action="rollback",
                model_name=name,
                from_version=current,
                to_version=target,
                reason=reason or "manual rollback",
                tracking_uri=self.tracking_uri,
                details={"history": history},
            )

            def apply() -> None:
                self.client.set_registered_model_alias(name, T.ALIAS_PRODUCTION, target)
                self.set_version_tags(
                    name, target, {T.STATUS: T.STATUS_PRODUCTION, T.LAST_EVENT: event.to_tag()}
                )
                if current is not None:
                    self.set_version_tags(
                        name,
                        current,
                        {T.STATUS: T.STATUS_ROLLED_BACK, T.LAST_EVENT: event.to_tag()},
                    )

            self._apply(event, history, changes=apply, store_path=store_path)
        return {
            "name": name,
            "rolled_back": True,
            "from_version": current,
            "to_version": target,
            "history": history,
            "event": event.to_dict(),
        }

    def _apply(self, event: RegistryEvent, history: list[str], changes, store_path=None) -> None:
        """Record ``event`` in the offline store and apply the MLflow ``changes``, all or nothing.

        The DuckDB insert and the MLflow writes share one transaction: if an MLflow call fails
        the event row is rolled back (the MLflow writes before the failure are undone too).
        """
        from quantcli.store.offline import OfflineStore

        name = event.model_name
        before_alias = self.alias_version(name, T.ALIAS_PRODUCTION)
        before_history = self.production_history(name)
        with OfflineStore(store_path) as store:
            store.ensure_schema("schema_registry")
            try:
                with store.transaction():
                    insert_event(store, event)
                    changes()
                    self.client.set_registered_model_tag(
                        name, T.PRODUCTION_HISTORY, json.dumps(history)
                    )
            except Exception:
                self._restore(name, before_alias, before_history)
                raise

    def _restore(self, name: str, alias_version: str | None, history: list[str]) -> None:
        if alias_version is None:
            # the alias may never have been set: restoring "no alias" is best effort
            with contextlib.suppress(Exception):
                self.client.delete_registered_model_alias(name, T.ALIAS_PRODUCTION)
        else:
            self.client.set_registered_model_alias(name, T.ALIAS_PRODUCTION, alias_version)
        self.client.set_registered_model_tag(name, T.PRODUCTION_HISTORY, json.dumps(history))

    # -- registration (used by the trainer) ---------------------------------------------------
    def register_version(
        self,
        name: str,
        run_id: str,
        model_dir: str | os.PathLike[str],
        version_tags: dict[str, Any],
        *,
        alias: str | None = T.ALIAS_STAGING,
    ) -> ModelVersionInfo:
        """Register the files of ``model_dir`` (already logged to the run under ``model/``).

        Signs every file, creates the version (source ``runs:/<run_id>/model``), records the
        sha256/signature tags and ``version_tags``, and points ``alias`` at it.
        """
        from mlflow.exceptions import MlflowException

        check_model_name(name)
        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise
        run = self.client.get_run(run_id)
        source = f"{run.info.artifact_uri.rstrip('/')}/{MODEL_ARTIFACT_PATH}"
        mv = self.client.create_model_version(name, source=source, run_id=run_id)
        signed: dict[str, Any] = {}
        for f in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
            rel = f"{MODEL_ARTIFACT_PATH}/{f.relative_to(model_dir)}"
            digest, signature = integrity.sign_file(f)
            signed[T.sha256_tag(rel)] = digest
            signed[T.signature_tag(rel)] = signature
        tags = dict(version_tags)
        tags.update(signed)
        tags[T.STATUS] = T.STATUS_STAGING
        # what the training run's backtest judged: `validate` binds the verdict to these bytes
        registered = json.dumps(
            {
                "artifacts": {
                    k[len(T.SHA256_PREFIX) :]: v
                    for k, v in signed.items()
                    if k.startswith(T.SHA256_PREFIX)
                },
                "dataset": tags.get(T.DATASET_SHA256),
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        tags[T.REGISTERED] = registered
        tags[T.REGISTERED_SIG] = integrity.sign_message(
            _registered_statement(name, mv.version, registered), "signing"
        )
        self.set_version_tags(name, mv.version, tags)
        if alias:
            self.client.set_registered_model_alias(name, alias, mv.version)
        return self.resolve(name, mv.version)
