"""The model registry facade: versions, aliases, verdicts, signed artifacts, promotion, rollback.

quantcli uses MLflow's model registry with **aliases, not the deprecated stages**: a new version
gets alias ``staging`` (``qcli model train``); ``promote`` moves alias ``production``;
``rollback`` moves it back to the previous production version. The lifecycle record lives in tags
(names in :mod:`quantcli.models.tags`) and every promotion, override and rollback is also a row of
the offline-store table ``registry_events`` (:mod:`quantcli.models.events`).

The rules live beside their code: the gate policy and the content-bound, signed verdicts in
:mod:`quantcli.models.verdicts`; gated promotion with a floor, the override, rollback's
history and the one-writer lock in :mod:`quantcli.models.lifecycle`; MLflow's process
environment in :mod:`quantcli.models.mlflow_env`. This class reads and writes the registry:

* **Integrity.** Every artifact a version serves is signed when it is added
  (:meth:`ModelRegistry.add_artifact`); its sha256 and signature are version tags.
  :meth:`ModelRegistry.load_native_model` and :meth:`ModelRegistry.download_artifacts`
  (``verify=True``) refuse a modified, unsigned or unexpected file with
  :class:`~quantcli.errors.IntegrityError` (exit 1). Nothing is unpickled.
* **Registration** signs every model file and records what the training run's backtest judged
  (:meth:`ModelRegistry.register_version`), so ``validate`` binds the verdict to those bytes.

MLflow is imported lazily (inside :class:`ModelRegistry`), so importing this module is cheap.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quantcli import integrity
from quantcli.errors import InputError, IntegrityError, NotFoundError
from quantcli.models import tags as T
from quantcli.models.lifecycle import (
    PromotionResult,
    RollbackResult,
    ValidationResult,
    promote_version,
    registry_lock,
    rollback_version,
    validate_version,
)
from quantcli.models.mlflow_env import (
    check_tracking_uri,
    is_local_store,
    probe_tracking_server,
    quiet_mlflow,
)
from quantcli.models.mlflow_files import is_mlflow_meta, norm_uri
from quantcli.models.serialize import load_model
from quantcli.models.verdicts import (
    GATE_FLOOR,
    GATE_NAME_RE,
    REGISTERED_FORMAT,
    artifact_role,
    backtest_record,
    gate_policy,
    gate_reasons,
    judged_snapshot,
    registered_statement,
    required_verdicts,
    verdict_state,
    verdict_statement,
)
from quantcli.models.versions import (
    MODEL_ARTIFACT_PATH,
    ModelVersionInfo,
    check_model_name,
    info_from,
    json_or_none,
)
from quantcli.workspace import Workspace


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
        check_tracking_uri(self.tracking_uri)
        probe_tracking_server(self.tracking_uri)
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
        info = info_from(mv, mine)
        info.verdict_states = self.verdict_states(info)
        return info

    def list_versions(self, name: str) -> list[ModelVersionInfo]:
        """Every version of ``name``, oldest first, with aliases and verdicts."""
        aliases = self.alias_map(name)
        out = []
        for mv in self._versions(name):
            # search results may omit tags/aliases: re-read each version
            full = self.client.get_model_version(name, mv.version)
            info = info_from(full, [a for a, v in aliases.items() if v == str(mv.version)])
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
        if not isinstance(gate, str) or not GATE_NAME_RE.match(gate):
            raise InputError(f"`gate` must be a lower-case name, got `gate={gate!r}`")
        info = self.resolve(name, version)
        current = {p: a.get("sha256", "") for p, a in info.artifacts.items()}
        if judged is not None:
            current = dict(judged)
        snapshot = judged_snapshot(gate, current, info.tags.get(T.DATASET_SHA256))
        self.record_signed_verdict(info, gate, passed, reasons, snapshot)

    def record_signed_verdict(
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
        signed = _signed_tags(info.name, info.version, info.run_id, local, artifact_path)
        parent = str(Path(artifact_path).parent)
        self.client.log_artifact(info.run_id, str(local), None if parent == "." else parent)
        self.set_version_tags(name, info.version, signed)
        return {
            "sha256": signed[T.sha256_tag(artifact_path)],
            "signature": signed[T.signature_tag(artifact_path)],
        }

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
        if verify:
            self.check_source(info)
        dst_dir = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="qcli-model-"))
        dst_dir.mkdir(parents=True, exist_ok=True)
        local = Path(self.client.download_artifacts(info.run_id, artifact_path, str(dst_dir)))
        if verify:
            self.verify_downloaded(info, local, artifact_path)
        return local, info

    def check_source(self, info: ModelVersionInfo) -> None:
        """Refuse a version whose registry source or storage location is not its run's
        ``model/`` folder.

        quantcli fetches and verifies a version's files through its run; MLflow's own loaders
        (``models:/NAME@alias``) read the version's storage location instead. If the two
        differed, the bytes MLflow serves would be bytes quantcli never checked.
        """
        run = self.client.get_run(info.run_id)
        expected = f"{run.info.artifact_uri.rstrip('/')}/{MODEL_ARTIFACT_PATH}"
        allowed = {norm_uri(expected), norm_uri(f"runs:/{info.run_id}/{MODEL_ARTIFACT_PATH}")}
        where = {
            "source": info.source,
            "storage location": self.client.get_model_version_download_uri(info.name, info.version),
        }
        for what, uri in where.items():
            if norm_uri(uri) not in allowed:
                raise IntegrityError(
                    f"{info.name} v{info.version}: its registry {what} {uri!r} is not the "
                    f"model folder of its run {info.run_id} ({expected!r}): MLflow would load "
                    "files quantcli never verified; refusing it"
                )

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
            if rec is None and is_mlflow_meta(info, f, rel):
                continue
            if rec is None:
                raise IntegrityError(
                    f"{info.name} v{info.version}: artifact {rel!r} has no recorded sha256/"
                    "signature; refusing to load it"
                )
            try:
                digest = integrity.verify_file(f, rec.get("sha256"), rec.get("signature"))
                integrity.verify_artifact(
                    digest,
                    rec.get("binding"),
                    name=info.name,
                    version=info.version,
                    run_id=info.run_id,
                    path=rel,
                )
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
        tmp = tempfile.mkdtemp(prefix="qcli-model-")
        try:
            local, info = self.download_artifacts(
                name, version, MODEL_ARTIFACT_PATH, tmp, alias=alias
            )
            return load_model(local), info
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def verify_all(self, info: ModelVersionInfo) -> None:
        """Download every recorded artifact folder of ``info`` and verify each file."""
        tmp = tempfile.mkdtemp(prefix="qcli-verify-")
        try:
            roots = sorted({artifact_role(p) for p in info.artifacts} | {MODEL_ARTIFACT_PATH})
            for root in roots:
                self.download_artifacts(info.name, info.version, root, Path(tmp) / root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def verify_model(self, name: str, version: str) -> None:
        """Download the version's ``model/`` files and verify them (IntegrityError if not)."""
        tmp = tempfile.mkdtemp(prefix="qcli-verify-")
        try:
            self.download_artifacts(name, version, MODEL_ARTIFACT_PATH, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- gates ----------------------------------------------------------------------------------
    # -- gates and lifecycle (quantcli.models.lifecycle) ----------------------------------------
    def gate_reasons(self, info: ModelVersionInfo, required: list[str]) -> list[str]:
        """Why ``info`` may not be promoted under ``required`` (empty when every gate passes)."""
        return gate_reasons(info, required, info.verdict_states or self.verdict_states(info))

    def validate(
        self, name: str, version: str | int | None = None, *, required: list[str] | None = None
    ) -> ValidationResult:
        """:func:`~quantcli.models.lifecycle.validate_version`; raises
        :class:`GateFailedError` (exit 1, ``result`` attached) unless every required verdict is
        ``pass`` and fresh (the backtest verdict is recorded either way)."""
        return validate_version(self, name, version, required=required).raise_if_failed()

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

    def promote(
        self,
        name: str,
        version: str | int | None = None,
        *,
        force: bool = False,
        reason: str | None = None,
        required: list[str] | None = None,
        store_path: str | os.PathLike[str] | None = None,
    ) -> PromotionResult:
        """:func:`~quantcli.models.lifecycle.promote_version`; a refusal raises
        :class:`GateFailedError` (exit 1) and changes nothing."""
        return promote_version(
            self,
            name,
            version,
            force=force,
            reason=reason,
            required=required,
            store_path=store_path,
        ).raise_if_failed()

    def rollback(
        self,
        name: str,
        *,
        reason: str | None = None,
        store_path: str | os.PathLike[str] | None = None,
    ) -> RollbackResult:
        """:func:`~quantcli.models.lifecycle.rollback_version`."""
        return rollback_version(self, name, reason=reason, store_path=store_path)

    # -- registration (used by the trainer) ---------------------------------------------------
    def register_version(
        self,
        name: str,
        run_id: str,
        model_dir: str | os.PathLike[str],
        version_tags: dict[str, Any],
        *,
        alias: str | None = T.ALIAS_STAGING,
        backtest: dict[str, Any] | None = None,
    ) -> ModelVersionInfo:
        """Register the files of ``model_dir`` (already logged to the run under ``model/``).

        Signs every file and binds it to the new version (source ``<run artifact uri>/model``),
        records the sha256/signature/binding tags and ``version_tags``, and points ``alias`` at
        it. ``backtest`` is the training backtest (:func:`~quantcli.models.verdicts.
        backtest_record`); it is signed into the registration record with the model files, and
        ``validate`` takes the backtest verdict from there only. The trainer passes it; without
        it the run's verdict tags and ``gate_*`` parameters at this moment are taken.
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
        if backtest is None:
            backtest = _run_backtest_record(run)
        signed: dict[str, Any] = {}
        for f in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
            rel = f"{MODEL_ARTIFACT_PATH}/{f.relative_to(model_dir).as_posix()}"
            signed.update(_signed_tags(name, mv.version, run_id, f, rel))
        tags = dict(version_tags)
        tags.update(signed)
        tags[T.STATUS] = T.STATUS_STAGING
        # what the training run's backtest judged, and its verdict: `validate` reads the verdict
        # from this signed record only, bound to these bytes and this run
        registered = json.dumps(
            {
                "format": REGISTERED_FORMAT,
                "run_id": run_id,
                "artifacts": {
                    k[len(T.SHA256_PREFIX) :]: v
                    for k, v in signed.items()
                    if k.startswith(T.SHA256_PREFIX)
                },
                "dataset": tags.get(T.DATASET_SHA256),
                "backtest": backtest,
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        tags[T.REGISTERED] = registered
        tags[T.REGISTERED_SIG] = integrity.sign_message(
            registered_statement(name, mv.version, registered), "signing"
        )
        self.set_version_tags(name, mv.version, tags)
        if alias:
            self.client.set_registered_model_alias(name, alias, mv.version)
        return self.resolve(name, mv.version)


def _signed_tags(
    name: str, version: str | int, run_id: str, local: Path, artifact_path: str
) -> dict[str, str]:
    """The sha256, digest signature and binding signature tags of one artifact file."""
    digest, signature = integrity.sign_file(local)
    binding = integrity.sign_artifact(
        digest, name=name, version=version, run_id=run_id, path=artifact_path
    )
    return {
        T.sha256_tag(artifact_path): digest,
        T.signature_tag(artifact_path): signature,
        T.binding_tag(artifact_path): binding,
    }


def _run_backtest_record(run: Any) -> dict[str, Any]:
    """The backtest a run's tags, ``gate_*`` parameters and ``backtest_*`` metrics state, for
    a caller that registers its own run without handing the record over."""
    tags, params = run.data.tags, run.data.params
    reasons = json_or_none(tags.get("quantcli.backtest.reasons"))
    thresholds: dict[str, float] | None = {}
    for key, value in params.items():
        if key.startswith("gate_"):
            try:
                thresholds[key[len("gate_") :]] = float(value)
            except ValueError:
                thresholds = None
                break
    metrics = {
        k[len("backtest_") :]: v for k, v in run.data.metrics.items() if k.startswith("backtest_")
    }
    return backtest_record(
        tags.get("quantcli.backtest.verdict"),
        reasons if isinstance(reasons, list) else [],
        thresholds or None,
        metrics,
    )


# the names importers used before the registry was split by concern
__all__ = [
    "MODEL_ARTIFACT_PATH",
    "ModelRegistry",
    "ModelVersionInfo",
    "check_model_name",
    "gate_policy",
    "is_local_store",
    "quiet_mlflow",
    "registry_lock",
    "required_verdicts",
    "verdict_statement",
]
