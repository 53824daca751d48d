"""Run directories: the one owner of what a run writes, and of how it is written.

A run directory is new for every run and never overwritten. Its file names are
the constants below, and every file in it (JSON, models, weights, arrays) is
written here, to a temporary file first and renamed into place, so a crash at
any moment leaves the previous file or the new one, never a truncated one.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import platform
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import RunError

MODEL_FILE = "model.keras"
RECIPE_FILE = "recipe.yaml"
MANIFEST_FILE = "manifest.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
CLASSES_FILE = "classes.json"
EVALUATION_FILE = "evaluation.json"
ADAPTATION_FILE = "adaptation.json"  # meta runs: what adapting the saved initialisation needs
COMPARE_FILE = "compare.json"  # compare runs: every entrant's scores on the same episodes
SWEEP_FILE = "sweep.json"  # sweep runs: every trial's parameters, objective, state and run directory
STUDY_FILE = "study.db"  # sweep runs: the Optuna study, unless --storage names another database
TRIALS_DIR = "trials"  # sweep runs: the run directories of its trials
DATASET_FILE = "dataset.json"  # transfer and meta runs: the meta-features of the data they trained on
INNER_RATES_FILE = "inner_rates.npz"  # meta runs: learned inner learning rates, beside the model
CHECKPOINTS_DIR = "checkpoints"
LOGS_DIR = "logs"
# In checkpoints/: the best meta-validation weights and rates of a meta run.
BEST_WEIGHTS = "best.weights.h5"
BEST_RATES = "best_inner_rates.npz"
# In a resume point's folder: all of a model's variables, its layers' random-number
# states included (which `save_weights` leaves out), and the optimizer's.
MODEL_VARIABLES = "model.npz"
OPTIMIZER_VARIABLES = "optimizer.npz"

STATUSES = ("running", "finished", "failed", "interrupted", "pruned")  # pruned: a sweep stopped the trial early


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, _FILE_MODE)  # mkstemp makes files private; run files are not
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=False) + "\n")


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write named arrays to an `.npz` file, atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as saved:
        return {name: saved[name] for name in saved.files}


def save_variables(variables: Sequence, path: Path) -> None:
    """Save a list of variables (a model's, an optimizer's) by position."""
    save_values([variable.numpy() for variable in variables], path)


def save_values(values: Sequence, path: Path) -> None:
    """Save arrays copied from a list of variables earlier, as `save_variables` would have saved them then."""
    save_arrays(path, {f"arr_{index}": np.asarray(value) for index, value in enumerate(values)})


def load_variables(variables: Sequence, path: Path) -> None:
    """Assign variables saved by `save_variables`, in the same order and shapes."""
    saved = load_arrays(path)
    if len(saved) != len(variables):
        raise RunError(f"{path}: holds {len(saved)} variables; expected {len(variables)}")
    for index, variable in enumerate(variables):
        variable.assign(saved[f"arr_{index}"])


def save_model(model, path: Path) -> None:
    """`model.save(path)` (Keras format) through a temporary file beside it and a rename."""
    temporary = path.with_name(f".{path.stem}.tmp.keras")
    model.save(temporary)
    temporary.replace(path)


def save_weights(model, path: Path) -> None:
    """`model.save_weights(path)` (a `.weights.h5` file) through a temporary file and a rename."""
    temporary = path.with_name(f".{path.name.removesuffix('.weights.h5')}.tmp.weights.h5")
    model.save_weights(temporary)
    temporary.replace(path)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for package in ("workbench", "tensorflow", "keras", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _process() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": platform.node()}


def still_running(manifest: dict[str, Any]) -> bool:
    """Whether the process that last ran this run is alive on this machine."""
    process = manifest.get("process") or {}
    if manifest.get("status") != "running" or process.get("host") != platform.node() or not process.get("pid"):
        return False
    try:
        os.kill(process["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_writable(folder: Path) -> None:
    """Fail before any training when run directories cannot be written under `folder`."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise RunError(f"{folder}: cannot write run directories here ({error.strerror}); choose another --runs-dir") from None


class Run:
    """One run directory and its manifest."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def create(cls, runs_dir: Path, name: str) -> Run:
        """Make a new, uniquely named run directory under `runs_dir`."""
        check_writable(runs_dir)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        for attempt in range(1000):
            path = Path(runs_dir) / (f"{name}-{stamp}" + (f"-{attempt}" if attempt else ""))
            try:
                path.mkdir()
            except FileExistsError:
                continue
            (path / CHECKPOINTS_DIR).mkdir()
            (path / LOGS_DIR).mkdir()
            return cls(path)
        raise RunError(f"{runs_dir}: cannot find a free run directory name for {name}")

    @classmethod
    def open(cls, path: Path) -> Run:
        """An existing run directory; raises `RunError` when it is not one."""
        run = cls(path)
        if not (run.path / MANIFEST_FILE).is_file():
            raise RunError(f"{path}: not a run directory (no {MANIFEST_FILE}); pass a directory that `workbench run` printed")
        return run

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def manifest(self) -> dict[str, Any]:
        try:
            return json.loads(self.file(MANIFEST_FILE).read_text())
        except (OSError, ValueError) as error:
            raise RunError(f"{self.file(MANIFEST_FILE)}: unreadable manifest ({error})") from None

    def start(self, recipe, recipe_yaml: str, recipe_path: Path | None = None, overrides: list[str] | None = None, **fields: Any) -> None:
        """Record the resolved recipe, where it came from (and `fields`), and mark the run as running."""
        atomic_write_text(self.file(RECIPE_FILE), recipe_yaml)
        atomic_write_json(
            self.file(MANIFEST_FILE),
            {
                "status": "running",
                "kind": recipe.kind,
                "name": recipe.name,
                "seed": recipe.seed,
                "recipe_sha256": hashlib.sha256(recipe_yaml.encode()).hexdigest(),
                "recipe_path": str(recipe_path) if recipe_path else None,
                "process": _process(),
                "overrides": overrides or [],
                **fields,
                "created": _now(),
                "updated": _now(),
                "versions": _versions(),
            },
        )

    def mark(self, status: str, **fields: Any) -> None:
        """Record the run's status; a failure's `error` stays only while the run is failed.

        When a failed run is resumed, its error moves to `earlier_errors`, so that
        the manifest of a run that went on to finish does not read as failed.
        """
        if status not in STATUSES:
            raise ValueError(f"Expected a status in {STATUSES}. Received: status={status!r}")
        manifest = self.manifest
        if status == "running" and "error" in manifest:
            manifest.setdefault("earlier_errors", []).append({"error": manifest.pop("error"), "updated": manifest.get("updated")})
            manifest.pop("traceback", None)
        manifest.update(fields, status=status, updated=_now())
        if status == "running":
            manifest["process"] = _process()
        atomic_write_json(self.file(MANIFEST_FILE), manifest)

    def write_json(self, name: str, value: Any) -> None:
        atomic_write_json(self.file(name), value)

    def load_recipe(self):
        """The resolved recipe this run was made from."""
        from workbench.recipe import load_resolved_recipe

        return load_resolved_recipe(self.file(RECIPE_FILE))


def latest_finished(runs_dir: Path, recipe_yaml: str) -> Run | None:
    """The newest finished run under `runs_dir` whose resolved recipe is `recipe_yaml`."""
    digest = hashlib.sha256(recipe_yaml.encode()).hexdigest()
    found = []
    for manifest_path in Path(runs_dir).glob(f"*/{MANIFEST_FILE}"):
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            continue
        if manifest.get("status") == "finished" and manifest.get("recipe_sha256") == digest:
            found.append((manifest.get("updated", ""), manifest_path.parent))
    return Run(max(found)[1]) if found else None
