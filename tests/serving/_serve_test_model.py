"""Run the real prediction service (quantcli.serving.http.serve, uvicorn) on the signed test model.

The registry side (``InferenceRuntime.from_registry``) is the model engineers' and is exercised
by ``qcli serve``; this launcher builds the same :class:`Predictor` from the test model's files.
Usage: python _serve_test_model.py --port PORT   (QCLI_HOME set by the caller)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, as pytest does

from quantcli.config import qcli_home
from quantcli.online import get_feature_store
from quantcli.serving.http import serve
from quantcli.serving.predict import Predictor
from serving._model import load_runtime

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    predictor = Predictor(load_runtime(qcli_home()), get_feature_store(), alias="production")
    serve(predictor, host="127.0.0.1", port=args.port)
