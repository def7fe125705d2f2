"""Feature engine: declared feature sets computed on OHLCV bars, equal to TA-Lib.

Public API::

    compute_features(bars, feature_set="technical_v1") -> pl.DataFrame
    load_feature_set(name) -> FeatureSet ; feature_names(name) -> list[str]
    quantcli.features.build.build_features(...)       (offline store writer)
    quantcli.features.dataset.load_training_frame(...) (features + label for training)
"""

from quantcli.features.compute import compute_features
from quantcli.features.definitions import (
    FeatureSet,
    FeatureSpec,
    LabelSpec,
    feature_names,
    load_feature_set,
)
from quantcli.features.generator import FeatureGenerator, FeatureResult

__all__ = [
    "FeatureGenerator",
    "FeatureResult",
    "FeatureSet",
    "FeatureSpec",
    "LabelSpec",
    "compute_features",
    "feature_names",
    "load_feature_set",
]
