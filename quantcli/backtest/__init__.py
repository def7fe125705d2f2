"""CPCV backtesting: combinatorial purged cross-validation, honest statistics, gates, reports."""

from quantcli.backtest.cpcv import CombinatorialPurgedCV

__all__ = ["CombinatorialPurgedCV"]
