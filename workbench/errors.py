"""The one error hierarchy of workbench.

The library raises these; the CLI turns them into one-line messages and exit
status 2. Nothing in the library prints an error and carries on.
"""


class WorkbenchError(Exception):
    """Base class of every error the workbench raises on purpose."""


class RecipeError(WorkbenchError):
    """A recipe (file or override) is malformed or names things that do not exist.

    Each problem is one line: `FILE:LINE:COL: field.path: message`.
    """

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class DataError(WorkbenchError):
    """A dataset is missing, empty or unusable for the requested recipe."""


class ModelError(WorkbenchError):
    """A model or weights file cannot be found, loaded or cut as asked.

    `field`, where known, is the recipe field at fault, relative to the `base`
    section (`("weights",)`): the runner places the message at that field's line.
    """

    def __init__(self, message: str, field: tuple[str, ...] | None = None):
        super().__init__(message)
        self.field = field


class RunError(WorkbenchError):
    """A run directory is missing, incomplete or cannot be written."""


class TrainingError(WorkbenchError):
    """Training cannot go on: the loss diverged, or a resume point does not fit."""


class ArgumentError(WorkbenchError, ValueError):
    """A library function got a value it cannot use: a count out of range, an unknown name, a shape that does not fit.

    A `ValueError` too, so that callers of the Python API catch it as they would
    Keras's own; the CLI shows it as one line like every `WorkbenchError`.
    """
