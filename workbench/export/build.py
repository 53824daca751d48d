"""`export_model`: load, convert, prove, and only then put the export in place.

Everything is written into a hidden folder beside the output first; the
artifact and its record are renamed into place only after the exported file,
run by its own runtime in a fresh process, matched the Keras model. On any
failure the folder goes, so nothing half-written is ever left at the output.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from workbench.errors import ArgumentError, ModelError, WorkbenchError
from workbench.export import formats, parity, record, runtime
from workbench.export.latency import measure
from workbench.export.source import load_subject

RUNTIME_TIMEOUT_S = 600


class ParityError(WorkbenchError):
    """The exported model's outputs differ from the Keras model's beyond tolerance."""


def export_model(source: Path, format: str, output: Path, quantize: str | None = None, data: Path | None = None) -> dict:
    """Export the classifier at `source` to `output`; return the record written to `output.export.json`."""
    formats.check_format(format, quantize)
    output = Path(output)
    for path in (output, record.record_path(output)):
        if path.exists() or path.is_symlink():
            raise ArgumentError(f"{path}: already exists; exports never overwrite, choose another --output")
    subject = load_subject(source, data, calibrate=quantize == "int8")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=".export"))
    except OSError as error:
        raise ArgumentError(f"{output}: cannot write here ({error.strerror}); choose another --output") from None
    try:
        artifact = staging / output.name
        formats.module(format).write(subject.exported, artifact, quantize, subject.calibration)
        measured = _run_in_fresh_process(format, artifact, subject.images, staging)
        keras_probabilities = subject.model.predict(subject.images, verbose=0)
        checked = parity.compare(
            keras_probabilities, measured["probabilities"], subject.labels, format, quantize, subject.regression, subject.primary
        )
        if not checked["passed"]:
            raise ParityError(parity.failure(format, quantize, checked))
        keras_speed = measure(subject.model.predict_on_batch, subject.images)
        written = record.build(format, quantize, str(source), subject, measured, record.artifact_bytes(artifact), checked, keras_speed)
        (staging / "record.json").write_text(json.dumps(written, indent=2) + "\n")
        artifact.rename(output)
        try:
            (staging / "record.json").rename(record.record_path(output))
        except OSError:
            _remove(output)
            raise
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _run_in_fresh_process(format: str, artifact: Path, images: np.ndarray, staging: Path) -> dict:
    """Run the artifact on `images` in a new Python process; its probabilities, input spec and latency."""
    with tempfile.TemporaryDirectory(dir=staging) as folder:
        folder = Path(folder)
        np.save(folder / "images.npy", images)
        command = [sys.executable, "-m", "workbench.export.runtime", format, str(artifact), str(folder / "images.npy"), str(folder)]
        environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        try:
            finished = subprocess.run(command, capture_output=True, text=True, timeout=RUNTIME_TIMEOUT_S, env=environment)
        except subprocess.TimeoutExpired:
            raise ModelError(f"{format}: the exported model did not finish predicting within {RUNTIME_TIMEOUT_S} s") from None
        if finished.returncode != 0:
            lines = [line for line in finished.stderr.splitlines() if line.strip()]
            raise ModelError(
                f"{format}: the exported model fails in its own runtime ({lines[-1] if lines else f'exit status {finished.returncode}'})"
            )
        measured = json.loads((folder / runtime.RUNTIME_FILE).read_text())
        measured["probabilities"] = np.load(folder / runtime.PROBABILITIES_FILE)
    return measured


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
