"""Resume points: everything a run needs to continue after a crash, written as one unit.

A resume point is a folder `checkpoints/state-NNNNNN/` holding the files of one
moment (weights, optimizer variables, learned rates) and `checkpoints/resume.json`,
which names that folder and holds the small state (phase, epoch or iteration,
best-so-far, random state). The folder is complete before `resume.json` is
renamed into place, so a kill at any moment leaves the previous resume point or
the new one, never a mix; older folders are removed only after.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench import runs
from workbench.errors import RunError

RESUME_FILE = "resume.json"
STATE_PREFIX = "state-"


class ResumePoint:
    """The latest resume point of a run directory."""

    def __init__(self, run: runs.Run):
        self.folder = run.file(runs.CHECKPOINTS_DIR)
        self.path = self.folder / RESUME_FILE

    def save(self, state: dict[str, Any], write_files: Callable[[Path], None]) -> None:
        """Write a new resume point: `write_files(folder)` fills its folder, `state` goes in resume.json."""
        previous = self.load_state()
        number = (previous or {}).get("number", 0) + 1
        folder = self.folder / f"{STATE_PREFIX}{number:06d}"
        if folder.exists():  # left by a kill between making it and naming it in resume.json
            shutil.rmtree(folder)
        folder.mkdir()
        write_files(folder)
        runs.atomic_write_json(self.path, {**state, "number": number, "folder": folder.name})
        for stale in self.folder.glob(f"{STATE_PREFIX}*"):
            if stale.name != folder.name:
                shutil.rmtree(stale, ignore_errors=True)

    def load_state(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            return json.loads(self.path.read_text())
        except ValueError as error:
            raise RunError(f"{self.path}: unreadable resume point ({error})") from None

    def load(self) -> tuple[dict[str, Any], Path] | None:
        """The state and files folder of the latest resume point, or None before the first."""
        state = self.load_state()
        if state is None:
            return None
        folder = self.folder / state["folder"]
        if not folder.is_dir():
            raise RunError(f"{folder}: the resume point's files are missing")
        return state, folder
