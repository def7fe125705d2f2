"""CPCV backtesting: combinatorial purged cross-validation, honest statistics, gates, reports."""

from quantcli.backtest.cpcv import CombinatorialPurgedCV
from quantcli.backtest.gates import BacktestValidator

__all__ = ["BacktestValidator", "CombinatorialPurgedCV"]
