"""CPCV backtesting: combinatorial purged cross-validation, honest statistics, gates, reports."""

from quantcli.backtest.costs import CostModel
from quantcli.backtest.cpcv import CombinatorialPurgedCV
from quantcli.backtest.gates import BacktestValidator, GateVerdict
from quantcli.backtest.portfolio import Construction

__all__ = ["BacktestValidator", "CombinatorialPurgedCV", "Construction", "CostModel", "GateVerdict"]
