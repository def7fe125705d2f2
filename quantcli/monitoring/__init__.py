"""Monitoring: feature drift, rolling performance, retraining triggers, shadow runs and guards.

Heavy packages (scipy, matplotlib, the model runtimes) load inside the functions that need them.
"""

from quantcli.monitoring.drift import DriftDetector, DriftResult, FeatureDrift, detect_feature_drift
from quantcli.monitoring.profile import BaselineProfile

__all__ = [
    "BaselineProfile",
    "DriftDetector",
    "DriftResult",
    "FeatureDrift",
    "detect_feature_drift",
]
