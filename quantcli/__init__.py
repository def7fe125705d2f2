"""quantcli: from raw OHLCV bars to a served, monitored, auditable trading model."""

__version__ = "0.1.0"
