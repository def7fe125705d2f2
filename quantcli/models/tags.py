"""The registry's vocabulary: every tag name quantcli reads or writes on MLflow, in one place.

Model-version tags are the record a promotion decision is based on. Three gates record a verdict
(``pass`` or ``fail``) on a version; the ONNX engineer's ``qcli model export`` writes ``parity`` and
``qcli model scan`` writes ``scan``, ``qcli model validate`` writes ``backtest``:

=============================  =====================================================
tag                            meaning
=============================  =====================================================
``quantcli.verdict.backtest``  CPCV backtest gates (Sharpe, PSR, max drawdown) passed
``quantcli.verdict.parity``    ONNX output matches the native model within tolerance
``quantcli.verdict.scan``      artifact scan found nothing unsafe (no pickle, ...)
``quantcli.reasons.<gate>``    JSON list of the failed criteria of that gate
=============================  =====================================================

Which verdicts ``promote`` requires is the config list ``[registry] required_verdicts``
(default ``["backtest", "parity", "scan"]``); a required verdict that is missing or ``fail``
refuses the promotion.
"""

from __future__ import annotations

PREFIX = "quantcli."

# -- gate verdicts ----------------------------------------------------------------------------
PASS = "pass"
FAIL = "fail"
VERDICT_VALUES = (PASS, FAIL)
GATES = ("backtest", "parity", "scan")
DEFAULT_REQUIRED_VERDICTS: tuple[str, ...] = GATES

VERDICT_BACKTEST = "quantcli.verdict.backtest"
VERDICT_PARITY = "quantcli.verdict.parity"
VERDICT_SCAN = "quantcli.verdict.scan"


def verdict_tag(gate: str) -> str:
    """The tag holding the verdict of ``gate`` (e.g. ``quantcli.verdict.parity``)."""
    return f"quantcli.verdict.{gate}"


VERDICT_PREFIX = "quantcli.verdict."


def judged_tag(gate: str) -> str:
    """The tag holding what the verdict of ``gate`` judged: roles and artifact sha256s (JSON)."""
    return f"quantcli.judged.{gate}"


def verdict_sig_tag(gate: str) -> str:
    """The tag holding the signing key's signature of the verdict of ``gate``."""
    return f"quantcli.verdict_sig.{gate}"


def reasons_tag(gate: str) -> str:
    """The tag holding the JSON list of failed criteria of ``gate``."""
    return f"quantcli.reasons.{gate}"


def verdict_at_tag(gate: str) -> str:
    """The tag holding when (ISO-8601 UTC) the verdict of ``gate`` was recorded."""
    return f"quantcli.verdict_at.{gate}"


# -- artifact integrity (one pair per artifact path, relative to the version's artifact root) --
def sha256_tag(artifact_path: str) -> str:
    """Tag of the hex sha256 of the artifact at ``artifact_path`` (e.g. ``model/booster.txt``)."""
    return f"quantcli.sha256.{artifact_path}"


def signature_tag(artifact_path: str) -> str:
    """Tag of the base64 Ed25519 signature of the artifact's sha256."""
    return f"quantcli.signature.{artifact_path}"


def binding_tag(artifact_path: str) -> str:
    """Tag of the signature binding the artifact's sha256 to its model, version, run and path
    (:func:`quantcli.integrity.sign_artifact`)."""
    return f"quantcli.binding.{artifact_path}"


SHA256_PREFIX = "quantcli.sha256."
BINDING_PREFIX = "quantcli.binding."
SIGNATURE_PREFIX = "quantcli.signature."

# -- lineage (on the run and copied onto the version) --------------------------------------
MODEL_KIND = "quantcli.model_kind"  # lgbm | mlp | ensemble
MODEL_FORMAT = "quantcli.model_format"  # the serialization format version, see serialize.py
MODEL_ARTIFACT_PATH = "quantcli.model_artifact_path"  # "model"
FEATURE_SET = "quantcli.feature_set"  # e.g. technical_v1
FEATURE_SET_VERSION = "quantcli.feature_set_version"  # e.g. 1
FEATURE_NAMES = "quantcli.feature_names"  # JSON list, model input order
LABEL = "quantcli.label"  # e.g. fwd_return_5d
DATASET_SHA256 = "quantcli.dataset_sha256"
DATASET_ROWS = "quantcli.dataset_rows"
TRAINED_AT = "quantcli.trained_at"
QUANTCLI_VERSION = "quantcli.version"
SEED = "quantcli.seed"

# -- lifecycle ----------------------------------------------------------------------------------
STATUS = "quantcli.status"  # staging | production | archived | rolled_back
STATUS_STAGING = "staging"
STATUS_PRODUCTION = "production"
STATUS_ARCHIVED = "archived"
STATUS_ROLLED_BACK = "rolled_back"
LAST_EVENT = "quantcli.last_event"  # JSON: the last registry event touching this version
PROMOTED_BY = "quantcli.promoted_by"
PROMOTED_AT = "quantcli.promoted_at"
PROMOTION_REASON = "quantcli.promotion_reason"
OVERRIDE = "quantcli.override"  # "true" when promoted with --force
OVERRIDE_DETAIL = "quantcli.override_detail"  # JSON: reason, OS user, policy, gates overridden
# JSON {"artifacts": {path: sha256}, "dataset": sha256}, signed: the files registered with the run
REGISTERED = "quantcli.registered"
REGISTERED_SIG = "quantcli.registered_sig"
# registered-model tag: JSON list of the versions that were production before the current one,
# oldest first; rollback pops the last one.
PRODUCTION_HISTORY = "quantcli.production_history"

# -- aliases ------------------------------------------------------------------------------------
ALIAS_STAGING = "staging"
ALIAS_PRODUCTION = "production"
