"""Shared test set-up: the data root (the Omniglot archives beside the repository, when present) and quiet TensorFlow logs."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Tests find the Omniglot archives under the data root, as users do.
if "WORKBENCH_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["WORKBENCH_DATA"] = str(SHARED_DATA)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
