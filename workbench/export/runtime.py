"""The exported model in a process of its own: what a user's server or phone would run.

`python -m workbench.export.runtime FORMAT ARTIFACT IMAGES.npy RESULT_FOLDER` loads
only the exported file (with its format's runtime, never Keras) and the images,
and writes `probabilities.npy` and `runtime.json` (input spec, latency) into
RESULT_FOLDER. Running it in a fresh process proves the file stands alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from workbench.export.formats import module
from workbench.export.latency import measure

PROBABILITIES_FILE = "probabilities.npy"
RUNTIME_FILE = "runtime.json"
BATCH = 32


def run(format: str, artifact: Path, images_file: Path, result: Path) -> None:
    runtime = module(format).Runtime(artifact)
    images = np.load(images_file).astype("float32")
    probabilities = np.concatenate([runtime.predict(images[start : start + BATCH]) for start in range(0, len(images), BATCH)])
    np.save(result / PROBABILITIES_FILE, probabilities)
    (result / RUNTIME_FILE).write_text(json.dumps({"input": runtime.input, **measure(runtime.predict, images)}))


if __name__ == "__main__":
    format, artifact, images_file, result = sys.argv[1:]
    run(format, Path(artifact), Path(images_file), Path(result))
