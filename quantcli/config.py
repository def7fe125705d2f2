"""Where state lives, and the embedded defaults.

All state lives under one directory, ``$QCLI_HOME`` (default ``./.qcli``), per the shared contract:

* ``offline.duckdb``   -- the offline store (bars, feature tables, builds, registry events, ...)
* ``mlflow.db``        -- the embedded MLflow tracking/registry store (SQLite)
* ``mlartifacts/``     -- MLflow artifacts
* ``feast/``           -- the generated Feast repo and its SQLite online store
* ``keys/``            -- the Ed25519 key pair that signs model artifacts
* ``audit/``           -- the prediction audit ledger
* ``reports/``         -- HTML/JSON/PNG reports written by commands

Functions (not module constants) so that a changed environment variable is honoured at once.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from quantcli.errors import InputError

ENV_HOME = "QCLI_HOME"
DEFAULT_HOME = ".qcli"


def qcli_home(create: bool = False) -> Path:
    """The state directory: ``$QCLI_HOME`` or ``./.qcli`` (absolute path)."""
    home = Path(os.environ.get(ENV_HOME) or DEFAULT_HOME).expanduser().resolve()
    if create:
        home.mkdir(parents=True, exist_ok=True)
    return home


def offline_store_path() -> Path:
    return qcli_home() / "offline.duckdb"


def mlflow_tracking_uri(explicit: str | None = None) -> str:
    """``--tracking-uri`` if given, else ``MLFLOW_TRACKING_URI``, else the embedded SQLite store."""
    if explicit:
        return explicit
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{qcli_home() / 'mlflow.db'}"


def mlflow_artifacts_dir() -> Path:
    return qcli_home() / "mlartifacts"


def feast_repo_dir() -> Path:
    return qcli_home() / "feast"


def keys_dir() -> Path:
    return qcli_home() / "keys"


def audit_dir() -> Path:
    return qcli_home() / "audit"


def reports_dir() -> Path:
    return qcli_home() / "reports"


def env_float(name: str, default: float, *, lo: float, hi: float, unit: str = "") -> float:
    """The number in environment variable ``name`` (unset or empty: ``default``).

    Anything else than a finite number in ``[lo, hi]`` (``nan``, ``abc``, a negative timeout)
    raises :class:`~quantcli.errors.InputError` naming the variable: silently falling back to
    the default, or waiting forever on ``nan``, would hide the typo.
    """
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and lo <= value <= hi):
        raise InputError(
            f"environment variable {name} must be a number in [{lo:g}, {hi:g}]"
            f"{' ' + unit if unit else ''}, got {raw[:40]!r}",
            hint=f"unset it for the default ({default:g})",
        )
    return value


def env_int(name: str, default: int, *, lo: int, hi: int, unit: str = "") -> int:
    """The integer in environment variable ``name`` (unset or empty: ``default``); like
    :func:`env_float`, anything else than an integer in ``[lo, hi]`` raises ``InputError``."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value: int | None = int(raw.strip())
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise InputError(
            f"environment variable {name} must be an integer in [{lo}, {hi}]"
            f"{' ' + unit if unit else ''}, got {raw[:40]!r}",
            hint=f"unset it for the default ({default})",
        )
    return value


_MEMORY_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt])(i?)b\s*", re.IGNORECASE)
MIN_MEMORY_LIMIT = 64 * 2**20


def env_memory_limit(name: str, default: str) -> str:
    """The DuckDB memory size in environment variable ``name`` (unset or empty: ``default``).

    DuckDB itself refuses malformed sizes, but reads ``-1`` as "no limit" and accepts ``0GB``
    (every query then fails out of memory): both raise :class:`InputError` naming ``name``.
    """
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    if raw.strip().startswith("-"):
        small = True
    else:
        m = _MEMORY_SIZE.fullmatch(raw)
        if m is None:
            return raw  # DuckDB's own parser names the problem
        base = 1024 if m.group(3) else 1000
        power = "kmgt".index(m.group(2).lower()) + 1
        small = float(m.group(1)) * base**power < MIN_MEMORY_LIMIT
    if small:
        raise InputError(
            f"environment variable {name} must be a memory size of at least 64MiB, "
            f"got {raw[:40]!r}",
            hint=f"use a size such as 2GB or 512MB; unset it for the default ({default})",
        )
    return raw


# The embedded defaults. ``--config FILE`` (TOML) overrides any key, section by section.
DEFAULTS: dict[str, dict[str, Any]] = {
    # the plausibility window of bar timestamps at ingest (quantcli.data.window): from
    # `earliest` (a date, UTC) to `future_days` days after now
    "data": {"earliest": "1900-01-01", "future_days": 1.0},
    "features": {"feature_set": "technical_v1"},
    "label": {"name": "fwd_return_5d"},
    "cpcv": {"n_groups": 10, "n_test_groups": 2, "embargo_pct": 0.01, "purge_pct": 0.0},
    "gates": {"min_sharpe": 1.2, "min_psr": 0.95, "max_drawdown": -0.20},
    # the training backtest's grid: "small" tries the configured model and a few variations
    # (so PBO is computed) and registers the best; "none" tries the configured one only
    "train": {"grid": "small"},
    # trading costs of the backtest, per unit of turnover (quantcli.backtest.costs.CostModel;
    # the defaults are for daily bars of liquid large-cap equities, docs/backtest.md says why)
    "costs": {
        "commission_bps": 1.0,  # broker and exchange fees, one way
        "half_spread_bps": 2.0,  # half the quoted bid-ask spread: crossing it once
        "slippage": "fixed",  # "fixed" (slippage_bps), "volatility" or "atr" (x slippage_mult)
        "slippage_bps": 2.0,
        "slippage_mult": 0.05,  # slippage = mult x daily volatility (or ATR / close)
        "slippage_window": 14,  # bars of the rolling volatility / ATR estimate
        "borrow_bps_per_year": 30.0,  # stock-loan fee on the short side's value
    },
    # how predictions become positions (quantcli.backtest.portfolio)
    "strategy": {
        "construction": "sign",  # "sign", "rank" (dollar-neutral long/short) or "vol_target"
        "target_vol": 0.10,  # vol_target: annualized volatility aimed at
        "vol_window": 60,  # vol_target: bars of the rolling volatility estimate
        "max_leverage": 2.0,  # vol_target: cap on gross exposure (sum of |weights|)
    },
    "lightgbm": {
        "n_estimators": 200,
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_child_samples": 50,
        "subsample": 0.8,
        "subsample_freq": 1,
        "colsample_bytree": 0.8,
        "seed": 42,
    },
    # the MLP of `--model mlp` and the MLP member of `--model ensemble` (sklearn MLPRegressor
    # behind a StandardScaler, trained on the standardized target; quantcli.models.estimators)
    "mlp": {
        "hidden_layer_sizes": [32, 16],
        "activation": "relu",
        "alpha": 1e-4,
        "learning_rate_init": 1e-3,
        "max_iter": 300,
        "early_stopping": True,
        "validation_fraction": 0.1,
        "n_iter_no_change": 10,
    },
    "parity": {"fp32_max_loss_pct": 0.1, "int8_max_loss_pct": 1.0},
    "drift": {"psi_threshold": 0.1, "ks_threshold": 0.05, "jsd_threshold": 0.05},
    "monitor": {"window_size": 1000, "min_sharpe": 1.0, "max_drawdown": -0.25},
    "retrain": {"schedule_days": 90, "min_samples": 10000, "drift_threshold": 3},
    "shadow": {"max_pnl_divergence": 0.05},
    # alert and rollback thresholds of `qcli monitor guard` (quantcli.monitoring.guard
    # .GuardThresholds; fractions, not percent; a value exactly at a limit does not breach it)
    "guard": {
        "min_sharpe": 0.8,  # annualized rolling Sharpe below this ...
        "sharpe_days": 3,  # ... on this many consecutive UTC days: CRITICAL
        "max_drawdown": -0.25,  # drawdown below: CRITICAL
        "warn_drawdown": -0.20,  # drawdown below: WARNING
        "max_error_rate": 0.01,  # share of /predict requests failing (5xx) above: CRITICAL
        "warn_error_rate": 0.005,  # above: WARNING
        "max_slow_share": 0.05,  # share of requests slower than 500 ms above: WARNING
        "max_drifted_features": 5,  # features drifted in the latest drift check above: WARNING
    },
    # gate verdicts `qcli model promote` requires (quantcli.models.tags)
    "registry": {"required_verdicts": ["backtest", "parity", "scan"]},
    # `qcli serve` (quantcli.serving.follow.ServingConfig checks these)
    "serving": {
        "poll_interval_s": 2.0,  # how often a service re-reads its alias, rollout and halt
        "max_body_bytes": 1_000_000,  # larger /predict bodies get 413, refused while reading
        "shadow_queue": 10_000,  # requests waiting for the shadow model; beyond: dropped, counted
    },
    # alert delivery (quantcli.monitoring.alerts.AlertConfig checks these); "" disables a route,
    # "env:NAME" reads the webhook URL from the environment
    "alerts": {
        "critical_url": "",
        "warning_url": "",
        "info_url": "",
        "retries": 3,
        "backoff_s": 0.5,
        "timeout_s": 5.0,
        "delivery_budget_s": 120.0,  # one alert's delivery in all, retries and backoff included
        "dead_letter": "",  # default $QCLI_HOME/alerts/dead_letter.jsonl
    },
}


@dataclass(frozen=True)
class Range:
    """An interval a numeric config value must lie in; ``None`` leaves a side unbounded.

    A bound may be another key of the same section (a string, e.g. ``hi="n_groups"``), read from
    the merged config. Every value must also be finite (TOML accepts ``inf`` and ``nan``).
    """

    lo: float | str | None = None
    hi: float | str | None = None
    lo_open: bool = False  # True: lo itself is outside
    hi_open: bool = False  # True: hi itself is outside
    note: str | None = None  # why, or the unit (shown as the error's hint)

    def describe(self, section: dict[str, Any] | None = None) -> str:
        """The allowed range in words, e.g. ``in (0, 1]``, ``>= 2`` or, a bound naming another
        key of ``section``, ``in [1, n_groups) = [1, 10)`` (without ``section``: ``in [1,
        n_groups)``)."""

        def show(bound: float | str) -> str:
            return bound if isinstance(bound, str) else f"{bound:g}"

        if self.lo is None and self.hi is None:
            return "a finite number"
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {show(self.lo)}"  # type: ignore[arg-type]
        if self.lo is None:
            return f"{'<' if self.hi_open else '<='} {show(self.hi)}"
        left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
        text = f"in {left}{show(self.lo)}, {show(self.hi)}{right}"
        if section is not None and (isinstance(self.lo, str) or isinstance(self.hi, str)):
            lo, hi = self._resolve(self.lo, section), self._resolve(self.hi, section)
            text += f" = {left}{lo:g}, {hi:g}{right}"
        return text

    def contains(self, value: float, section: dict[str, Any]) -> bool:
        # an int past 64 bits is finite to Python but overflows DuckDB and NumPy downstream
        if not math.isfinite(value) or (isinstance(value, int) and abs(value) >= 2**63):
            return False
        lo, hi = self._resolve(self.lo, section), self._resolve(self.hi, section)
        if lo is not None and (value <= lo if self.lo_open else value < lo):
            return False
        return not (hi is not None and (value >= hi if self.hi_open else value > hi))

    @staticmethod
    def _resolve(bound: float | str | None, section: dict[str, Any]) -> float | None:
        return float(section[bound]) if isinstance(bound, str) else bound


_PERCENT = "the parity loss in percent (0.1 means 0.1 %); above 100 % no model fails"
_EMBARGO = "a fraction of the timestamps, not percent (0.01 means 1 %)"
_DRAWDOWN = "a negative fraction: -0.20 allows drawdowns up to 20 %"
_BPS = "basis points per unit of turnover (1 bp = 0.01 %)"

#: The keys that take one of a few words (checked by :func:`load_config` like the ranges).
CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("costs", "slippage"): ("fixed", "volatility", "atr"),
    ("strategy", "construction"): ("sign", "rank", "vol_target"),
    ("train", "grid"): ("small", "none"),
}


#: The range of every checked config key; checked by :func:`load_config` after the type check,
#: on the merged config (so a bound naming another key sees its final value). ``[guard]`` is
#: checked by :class:`quantcli.monitoring.guard.GuardThresholds` (its own cross-key rules);
#: ``[lightgbm]`` is LightGBM's to check. The domain classes (``CombinatorialPurgedCV``,
#: ``BacktestValidator``, ``DriftDetector``, ...) check their parameters again for Python callers;
#: they sit in upper layers, which config may not import, so the ranges are data here and
#: ``tests/test_config.py`` checks that each class refuses what this table refuses.
RANGES: dict[tuple[str, str], Range] = {
    ("data", "future_days"): Range(lo=0, hi=36500, note="days after now a bar may be dated"),
    ("cpcv", "n_groups"): Range(lo=2),
    ("cpcv", "n_test_groups"): Range(lo=1, hi="n_groups", hi_open=True),
    ("cpcv", "embargo_pct"): Range(lo=0, hi=1, hi_open=True, note=_EMBARGO),
    ("cpcv", "purge_pct"): Range(lo=0, hi=1, hi_open=True, note=_EMBARGO),
    ("gates", "min_sharpe"): Range(note="annualized Sharpe ratio"),
    ("gates", "min_psr"): Range(lo=0, hi=1, note="a probability"),
    ("gates", "max_drawdown"): Range(lo=-1, hi=0, note=_DRAWDOWN),
    ("costs", "commission_bps"): Range(lo=0, hi=1000, note=_BPS),
    ("costs", "half_spread_bps"): Range(lo=0, hi=1000, note=_BPS),
    ("costs", "slippage_bps"): Range(lo=0, hi=1000, note=_BPS),
    ("costs", "slippage_mult"): Range(lo=0, hi=10, note="a multiple of the daily volatility"),
    ("costs", "slippage_window"): Range(lo=2, note="bars"),
    ("costs", "borrow_bps_per_year"): Range(lo=0, hi=10_000, note="basis points a year"),
    ("strategy", "target_vol"): Range(lo=0, hi=5, lo_open=True, note="annualized, 0.10 is 10 %"),
    ("strategy", "vol_window"): Range(lo=2, note="bars"),
    ("strategy", "max_leverage"): Range(lo=0, hi=100, lo_open=True, note="gross exposure"),
    ("mlp", "alpha"): Range(lo=0, note="L2 penalty"),
    ("mlp", "learning_rate_init"): Range(lo=0, lo_open=True, note="Adam's step size"),
    ("mlp", "max_iter"): Range(lo=1, note="epochs"),
    ("mlp", "validation_fraction"): Range(
        lo=0, hi=1, lo_open=True, hi_open=True, note="share of the training rows for early stopping"
    ),
    ("mlp", "n_iter_no_change"): Range(lo=1, note="epochs without improvement before stopping"),
    ("parity", "fp32_max_loss_pct"): Range(lo=0, hi=100, lo_open=True, note=_PERCENT),
    ("parity", "int8_max_loss_pct"): Range(lo=0, hi=100, lo_open=True, note=_PERCENT),
    ("drift", "psi_threshold"): Range(lo=0, lo_open=True, note="PSI: 0.1 moderate, 0.25 major"),
    ("drift", "ks_threshold"): Range(lo=0, hi=1, lo_open=True, note="a KS p-value"),
    ("drift", "jsd_threshold"): Range(lo=0, hi=1, lo_open=True, note="JS divergence, base 2"),
    ("monitor", "window_size"): Range(lo=2, note="predictions with a known outcome"),
    ("monitor", "min_sharpe"): Range(note="annualized Sharpe ratio"),
    ("monitor", "max_drawdown"): Range(lo=-1, hi=0, hi_open=True, note=_DRAWDOWN),
    ("retrain", "schedule_days"): Range(lo=1, note="days between retrainings"),
    ("retrain", "min_samples"): Range(lo=1, note="new labelled samples"),
    ("retrain", "drift_threshold"): Range(lo=1, note="number of drifted features"),
    ("shadow", "max_pnl_divergence"): Range(
        lo=0, lo_open=True, note="|W_candidate / W_production - 1|, a fraction (0.05 means 5 %)"
    ),
}


#: The activations of the ``[mlp]`` section (sklearn's ``MLPRegressor`` accepts these).
MLP_ACTIVATIONS = ("identity", "logistic", "tanh", "relu")


def mlp_params(params: dict[str, Any] | None = None) -> dict[str, Any]:
    """MLP parameters: the ``[mlp]`` defaults overridden by ``params``, with the list and choice
    keys the range table cannot express checked (:class:`InputError` otherwise)."""
    defaults = DEFAULTS["mlp"]
    merged = dict(defaults)
    merged.update(params or {})
    unknown = set(merged) - set(defaults)
    if unknown:
        raise InputError(
            f"unknown MLP parameter(s) {sorted(unknown)}",
            hint=f"known: {', '.join(sorted(defaults))}",
        )
    sizes = merged["hidden_layer_sizes"]
    if (
        not isinstance(sizes, (list, tuple))
        or not sizes
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes)
    ):
        raise InputError(
            f"MLP parameter hidden_layer_sizes must be a non-empty list of integers >= 1, "
            f"got {sizes!r}",
            hint="one width per hidden layer, e.g. [32, 16]",
        )
    if merged["activation"] not in MLP_ACTIVATIONS:
        raise InputError(
            f"MLP parameter activation must be one of {', '.join(MLP_ACTIVATIONS)}, "
            f"got {merged['activation']!r}"
        )
    return merged


def parse_instant(text: str, what: str) -> datetime:
    """``YYYY-MM-DD`` or an ISO datetime as an aware UTC datetime (naive means UTC).

    Raises :class:`InputError` naming ``what`` (an option or a config key) otherwise.
    """
    if not isinstance(text, str):
        raise InputError(f"{what} must be a date such as 1900-01-01, got {text!r}")
    try:
        if len(text.strip()) == 10:
            parsed = datetime.combine(date.fromisoformat(text.strip()), datetime.min.time())
        else:
            parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(
            f"{what} must be a date (YYYY-MM-DD) or an ISO datetime, got {text[:40]!r}"
        ) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def load_config(path: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """The embedded defaults, overridden section by section by the TOML file ``path``.

    Every value must have its default's type and lie in its :data:`RANGES` entry; otherwise
    :class:`~quantcli.errors.InputError` (exit code 2) names the file, section, key, value and
    the allowed range.
    """
    cfg = {section: dict(values) for section, values in DEFAULTS.items()}
    if path is None:
        return cfg
    p = Path(path)
    try:
        user = tomllib.loads(p.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise InputError(f"{p}: config file not found", hint="--config takes a TOML file") from None
    except IsADirectoryError:
        raise InputError(f"{p}: is a directory", hint="--config takes a TOML file") from None
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1
        byte = exc.object[exc.start]
        raise InputError(f"{p} line {line}: not UTF-8 (byte {byte:#04x})") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{p}: not valid TOML: {exc}") from None
    for section, values in user.items():
        if section not in cfg:
            raise InputError(
                f"{p}: unknown config section [{section}]",
                hint=f"known sections: {', '.join(sorted(cfg))}",
            )
        if not isinstance(values, dict):
            raise InputError(f"{p}: [{section}] must be a table")
        for key, value in values.items():
            if section != "lightgbm" and key not in cfg[section]:
                raise InputError(
                    f"{p}: unknown key '{key}' in [{section}]",
                    hint=f"known keys: {', '.join(sorted(cfg[section]))}",
                )
            if key in DEFAULTS[section]:
                _check_type(p, section, key, value, DEFAULTS[section][key])
            # a range rule names its range for nan/inf instead; an int past 64 bits is refused
            # here either way (a range rule with an open side would let it through)
            if (section, key) not in RANGES or isinstance(value, int):
                _check_finite(p, section, key, value)
            cfg[section][key] = value
    _check_ranges(p, cfg, set(user))
    for (section, key), allowed in CHOICES.items():
        if section in user and cfg[section][key] not in allowed:
            raise InputError(
                f"{p}: [{section}] {key} must be one of {', '.join(allowed)}, "
                f"got {cfg[section][key]!r}"
            )
    if "data" in user:  # the date the range table cannot express
        parse_instant(cfg["data"]["earliest"], f"{p}: [data] earliest")
    if "mlp" in user:  # the list and choice keys the range table cannot express
        try:
            mlp_params(cfg["mlp"])
        except InputError as exc:
            raise InputError(f"{p}: [mlp] {exc.message}", hint=exc.hint) from None
    return cfg


def _check_ranges(path: Path, cfg: dict[str, dict[str, Any]], sections: set[str]) -> None:
    """Every :data:`RANGES` rule of the sections the file set, in table order."""
    for (section, key), rule in RANGES.items():
        if section not in sections:
            continue  # the defaults are in range (tests/test_config.py checks)
        values = cfg[section]
        if not rule.contains(values[key], values):
            raise InputError(
                f"{path}: [{section}] {key} must be {rule.describe(values)}, got {values[key]!r}",
                hint=rule.note,
            )


def _check_finite(path: Path, section: str, key: str, value: Any) -> None:
    """No ``nan``/``inf`` (TOML accepts both) and no integer beyond 64 bits, in any value,
    lists included, whether or not a range rule covers the key."""
    items = value if isinstance(value, list) else [value]
    for item in items:
        bad = (isinstance(item, float) and not math.isfinite(item)) or (
            isinstance(item, int) and not isinstance(item, bool) and abs(item) >= 2**63
        )
        if bad:
            raise InputError(f"{path}: [{section}] {key} must be a finite number, got {value!r}")


def _check_type(path: Path, section: str, key: str, value: Any, default: Any) -> None:
    """A value overriding a default has the default's type (an integer may stand for a float).

    Raises :class:`~quantcli.errors.InputError` naming the file, section and key, so a quoted
    number or a fraction where a count is expected fails at load, not deep inside a run.
    """
    if isinstance(default, bool):
        ok, want = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        want = "a number"
    elif isinstance(default, str):
        ok, want = isinstance(value, str), "a string"
    elif isinstance(default, list):
        ok, want = isinstance(value, list), "a list"
    else:  # pragma: no cover - every default above is one of these types
        return
    if not ok:
        raise InputError(f"{path}: [{section}] {key} must be {want}, got {value!r}")
