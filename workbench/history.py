"""`history.csv`: one row per epoch (transfer) or per logged iteration (meta), across phases."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import keras

from workbench import runs


class HistoryFile:
    """The rows of `history.csv`, rewritten atomically on every new row.

    `keep` rows of an existing file are read back, so that a resumed run
    continues the file from its resume point and drops what came after it.
    """

    def __init__(self, path: Path, keep: int = 0):
        self.path = path
        self.rows: list[dict] = []
        if keep and path.is_file():
            with open(path, newline="") as file:
                self.rows = [{key: value for key, value in row.items() if value != ""} for row in csv.DictReader(file)][:keep]

    def callback(self, phase: str) -> keras.callbacks.Callback:
        """A Keras callback that appends one row per epoch of `phase`."""
        history = self

        class Recorder(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                row = {"phase": phase, "epoch": len(history.rows) + 1, "phase_epoch": epoch + 1}
                row.update({key: float(value) for key, value in (logs or {}).items()})
                history.append(row)

        return Recorder()

    def append(self, row: dict) -> None:
        self.rows.append(row)
        columns = list(dict.fromkeys(key for r in self.rows for key in r))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, columns)
        writer.writeheader()
        writer.writerows(self.rows)
        runs.atomic_write_text(self.path, buffer.getvalue())
