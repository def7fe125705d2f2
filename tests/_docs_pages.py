"""What each docs page assumes before its first command, and the concrete values of its
placeholders.

A page runs in a copy of one prepared ``$QCLI_HOME`` (built once per session, :func:`build_home`):

* ``empty``: nothing yet (the page ingests);
* ``sample``: the bundled sample (SPX, IXIC 1999-2018) ingested, ``technical_v1`` built;
* ``synthetic``: ``synthetic_universe(8, 600, seed=3, ar1=0.4)`` ingested and built (a planted
  momentum signal the small config finds: models.md's "8 symbols x 600 days, ar1=0.4");
* ``synthetic6``: ``synthetic_universe(6, 600, seed=1, ar1=0.3)`` (backtest.md's run);
* ``deployed``: ``synthetic`` materialized into the SQLite online store, with model ``momentum``:
  v1 in production and v2 at staging, each a signed linear ONNX graph registered the way
  ``qcli model export`` logs one (tests/serving/_deploy.py; online.md's "registered linear test
  model").

Then :class:`Page` writes the files the page names (``bad.csv``, ``small.toml``, ...), runs the
state its text describes but does not show as a command (``before``), and substitutes its
placeholders (``subs``: regex -> replacement; ``{port}`` is the page's background service,
``{redis}`` the test Redis, ``{home}`` the page's ``$QCLI_HOME``). A transcript's ``$ cat FILE``
shows the file: its shown output is written to ``FILE`` before the page runs.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _docs_blocks import ROOT, doc_blocks

REDIS_URL = os.environ.get("QCLI_TEST_REDIS_URL", "redis://127.0.0.1:6399/0")


# -- the prepared homes --------------------------------------------------------------------------
def build_home(kind: str, home: Path, mlflow_template: Path) -> None:
    """Build the prepared home ``kind`` in ``home`` (``$QCLI_HOME`` already points there)."""
    import shutil

    from quantcli import build_features, ingest_frame, ingest_sample, synthetic_universe

    shutil.copy(mlflow_template, home / "mlflow.db")  # an empty, migrated registry
    if kind == "empty":
        return
    if kind == "sample":
        ingest_sample()
    else:
        shape = (6, 600, 1, 0.3) if kind == "synthetic6" else (8, 600, 3, 0.4)
        ingest_frame(synthetic_universe(*shape[:3], ar1=shape[3]))
    build_features()
    if kind == "deployed":
        _deploy_momentum()


def _deploy_momentum() -> None:
    from _registration import register_model
    from serving._deploy import force_promote, linear

    from quantcli import materialize
    from quantcli.online import load_declaration

    materialize()
    names = load_declaration().feature_names
    v1 = register_model("momentum", **linear(names, bias=0.01, coef=0.001)).version
    force_promote("momentum", v1)
    # v2 is the pages' candidate: its gates pass, as a canary of it needs
    v2 = register_model("momentum", backtest="pass", **linear(names, bias=0.02, coef=0.001))
    _gates_pass("momentum", v2.version)


def _gates_pass(name: str, version: str) -> None:
    """Passing, signed verdicts of every floor gate: parity and scan as export and scan record
    them, the backtest's from the version's signed registration record (``qcli model validate``)."""
    from quantcli.models.lifecycle import validate_version
    from quantcli.models.registry import ModelRegistry

    reg = ModelRegistry()
    for gate in ("parity", "scan"):
        reg.record_verdict(name, version, gate, True, [])
    assert validate_version(reg, name, version).passed


# -- the files pages name ------------------------------------------------------------------------
def _write(files: dict[str, str]) -> Callable[[Path], None]:
    def write(workdir: Path) -> None:
        for name, text in files.items():
            (workdir / name).write_text(text)

    return write


def _toml_block_of(doc: str, after: str) -> str:
    """The first ```toml block of ``doc`` after the text ``after``."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    start = text.index(after)
    block = next(
        b
        for b in doc_blocks(ROOT / doc)
        if b.lang == "toml" and b.line > text.count("\n", 0, start)
    )
    return block.body


def _prod_toml(workdir: Path) -> None:
    (workdir / "prod.toml").write_text(
        _toml_block_of("docs/runbooks/MODEL_DEPLOYMENT.md", "`prod.toml` routes alerts")
    )


def _monitoring_files(workdir: Path) -> None:
    """250 SPX predictions with outcomes (2018) and a service metrics snapshot."""
    import polars as pl

    from quantcli import load_sample

    spx = load_sample().filter(pl.col("symbol") == "SPX").sort("ts")
    ret = spx.with_columns(actual=pl.col("close").shift(-1) / pl.col("close") - 1.0)
    year = ret.filter(pl.col("ts").dt.year() == 2018).drop_nulls("actual").tail(250)
    # right on three days of four: a healthy rolling Sharpe, as on the page (not degraded)
    sign = pl.when(pl.int_range(pl.len()) % 4 == 0).then(-1.0).otherwise(1.0)
    log = year.select("ts", (sign * pl.col("actual")).alias("prediction"), "actual")
    log.write_csv(workdir / "spx_momentum_2018.csv")
    snapshot = {"requests": 5000, "errors": 75, "slow_requests": 10}
    (workdir / "metrics_snapshot.json").write_text(json.dumps(snapshot))


def _serving_models(home: Path, workdir: Path) -> None:
    """``spx_lgbm`` (LightGBM) and ``spx_ens`` (the ensemble) fitted on the sample's features."""
    from _registration import register_model

    # no backtest: the page exports and scans them
    register_model("spx_lgbm", params={"n_estimators": 30})
    register_model("spx_ens", kind="ensemble", params={"lgbm": {"n_estimators": 30}})


def _shadow_records(ledger: Path) -> list[dict]:
    lines = ledger.read_text().splitlines() if ledger.exists() else []
    return [r for r in map(json.loads, lines) if r.get("event") == "shadow"]


def _shadow_traffic(home: Path, workdir: Path, port: str) -> None:
    """The shadow's "24 h" in brief: requests to the service until the shadow scored some."""
    import time

    import httpx

    ledger = home / "audit" / "ledger.jsonl"
    deadline = time.monotonic() + 60
    while not _shadow_records(ledger):
        assert time.monotonic() < deadline, "the service never scored a shadow request"
        body = {"symbols": ["SYM0000", "SYM0001"]}
        response = httpx.post(f"http://127.0.0.1:{port}/predict", json=body, timeout=10)
        assert response.status_code == 200, response.text
        time.sleep(0.5)


def _v3_canary(home: Path, workdir: Path, port: str) -> None:
    """A new candidate v3 on a canary share, for the runbook's abort step."""
    from _registration import register_model
    from serving._deploy import linear

    from quantcli.online import load_declaration

    names = load_declaration().feature_names
    v3 = register_model("momentum", backtest="pass", **linear(names, bias=0.03, coef=0.001))
    _gates_pass("momentum", v3.version)


# -- the pages -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Page:
    home: str
    files: Callable[[Path], None] | None = None
    subs: tuple[tuple[str, str], ...] = ()
    cwd: str = ""  # relative to $QCLI_HOME ("audit"); "" = a fresh working directory
    service: tuple[str, ...] = ()  # argv of a background `qcli serve`; its port is {port}
    serves: bool = False  # the page's own `qcli serve` is that service (kept running)
    setup: Callable[[Path, Path], None] | None = None  # (home, workdir): state the text assumes
    env: tuple[tuple[str, str], ...] = ()  # variables the page's config names (env:NAME)
    # the start of a step's command -> what runs before the first such step (qcli argv lists,
    # in process, or a callable(home, workdir, port)): the state the page's prose sets up there
    before: dict[str, list[list[str] | Callable[[Path, Path, str], None]]] = field(
        default_factory=dict
    )

    def substitute(self, command: str, **values: str) -> str:
        for pattern, repl in self.subs:
            command = re.sub(pattern, repl.format(**values), command)
        return command


SMALL_TOML = (
    "[cpcv]\nn_groups = 6\nn_test_groups = 2\n\n"
    "[lightgbm]\nn_estimators = {n}\nnum_leaves = 7\nmin_child_samples = 20\n"
)
AAA_CSV = (
    "date,open,high,low,close,volume\n2020-01-02,10,11,9.5,10.5,1000\n"
    "2020-01-03,10.5,11.2,10,11,1200\n2020-01-06,11,11.5,10.6,11.1,900\n"
)
# line 3: high 10.2 below low 11.0
BAD_CSV = (
    "date,open,high,low,close,volume\n2020-01-02,10,11,9.5,10.5,1000\n"
    "2020-01-03,10.5,10.2,11,10.8,1200\n"
)
NAME_V = (
    ("\\bNAME\\b", "momentum"),
    ("--version V\\b", "--version 2"),
    ("HOST:8000", "127.0.0.1:{port}"),
)
NO_DRIFT = (
    "monitor drift --no-report --baseline 2017-01-01:2017-12-31 --current 2017-01-01:2017-12-31"
)
SERVE = ("serve", "--model", "momentum", "--alias", "production", "--poll-interval", "1")

PAGES: dict[str, Page] = {
    "docs/audit.md": Page(
        "deployed",
        cwd="audit",  # the page truncates ledger.jsonl in place: $QCLI_HOME/audit
        before={
            "qcli audit verify": [["predict", "SYM0000", "SYM0001", "--model", "momentum"]] * 3
        },
    ),
    "docs/backtest.md": Page(
        "synthetic6",
        files=_write({"small.toml": SMALL_TOML.format(n=30)}),
        subs=(("/tmp/bt_report", "bt_report"),),
    ),
    "docs/configuration.md": Page("empty", files=_write({"prices.csv": AAA_CSV})),
    "docs/data.md": Page(
        "empty",
        files=_write({"bad.csv": BAD_CSV, "aaa.csv": AAA_CSV}),
        # "second time": the page ingested aaa.csv once before the transcript
        before={"qcli data ingest --sample": [["data", "ingest", "aaa.csv", "--symbol", "AAA"]]},
    ),
    "docs/features.md": Page("sample", subs=(("~/\\.qcli", "{home}"),)),
    "docs/models.md": Page("synthetic", files=_write({"small.toml": SMALL_TOML.format(n=20)})),
    "docs/monitoring.md": Page(
        "sample",
        files=_monitoring_files,
        # the retrain-check section's state: the latest drift check found (almost) no drift
        # ("n_drifted": 2), not the 2016-vs-2018 checks of the drift section above it
        before={
            "qcli monitor retrain-check": [NO_DRIFT.split()],
        },
    ),
    "docs/online.md": Page(
        "deployed",
        subs=(("localhost:8765", "127.0.0.1:{port}"), ("redis://localhost:6379/0", "{redis}")),
        service=SERVE,
    ),
    "docs/serving.md": Page("sample", setup=_serving_models),
    "docs/runbooks/MODEL_DEPLOYMENT.md": Page(
        "deployed",
        files=_prod_toml,
        subs=NAME_V,
        # prod.toml's webhooks: a closed loopback port, so alerts are dead-lettered, not sent
        env=(
            ("PAGER_WEBHOOK", "http://127.0.0.1:9/pager"),
            ("CHAT_WEBHOOK", "http://127.0.0.1:9/chat"),
        ),
        serves=True,  # section 0 starts the service the later sections reach at HOST:8000
        before={
            # the prose between: "End the shadow: qcli model rollout NAME --share 0 ..."
            "qcli model shadow NAME --live": [_shadow_traffic],
            "qcli model rollout NAME --version V --share 0.1": [
                ["model", "rollout", "momentum", "--share", "0", "--reason", "shadow done"]
            ],
            # an abort needs a rollout in progress: a new v3 on a 10 % canary
            "qcli model rollout NAME --share 0": [
                _v3_canary,
                ["model", "rollout", "momentum", "--version", "3", "--share", "0.1"],
            ],
        },
    ),
}
