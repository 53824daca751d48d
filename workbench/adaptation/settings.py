"""`AdaptSettings`: how a finished run adapts to one task (a compare entrant's `adapt`, `workbench adapt`'s options).

Transfer runs adapt by one of `TRANSFER_METHODS`; meta runs by their own inner
loop (`INNER_LOOP`), whose steps and rates the run itself holds. The settings
are checked here, once, so that the adaptation code trusts them.
"""

from __future__ import annotations

import dataclasses
import typing

import pydantic

from workbench.errors import ArgumentError
from workbench.recipe.schema import FinetuneAdapt, HeadAdapt, Optimizer, Selector

PROTOTYPES, HEAD, FINETUNE, INNER_LOOP = "prototypes", "head", "finetune", "inner_loop"
TRANSFER_METHODS = (PROTOTYPES, HEAD, FINETUNE)
METHODS = (*TRANSFER_METHODS, INNER_LOOP)
GRADIENT_METHODS = (HEAD, FINETUNE)

# The defaults of a compare entrant's `adapt` section, which the recipe format states.
DEFAULT_LEARNING_RATES = {
    method: section.model_fields["learning_rate"].default for method, section in ((HEAD, HeadAdapt), (FINETUNE, FinetuneAdapt))
}
DEFAULT_UNFREEZE = FinetuneAdapt.model_fields["unfreeze"].default
DEFAULT_STEPS = 100  # `workbench adapt --method head|finetune` without --steps


@dataclasses.dataclass(frozen=True)
class AdaptSettings:
    """A compare entrant's `adapt` section, and `workbench adapt`'s options.

    Attributes:
        method: "prototypes" | "head" | "finetune" for transfer runs;
            "inner_loop" for meta runs.
        learning_rate: step size of head and finetune; None: the method's
            default (`DEFAULT_LEARNING_RATES`).
        unfreeze: finetune only: the base layers that train with the head, a
            layer selector as in recipes (all | none | {last: N} |
            {until: name} | {match: regex}); None: all.
        optimizer: head and finetune: adam | adamw | sgd | rmsprop, with the
            hyperparameters that recipes' phases use.
    """

    method: str
    learning_rate: float | None = None
    unfreeze: object = None
    optimizer: str = "adam"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ArgumentError(f"Expected an adaptation method among {', '.join(METHODS)}. Received: method={self.method!r}")
        if self.learning_rate is not None:
            rate = self.learning_rate
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < float("inf"):
                raise ArgumentError(f"Expected a learning rate > 0. Received: learning_rate={rate!r}")
            object.__setattr__(self, "learning_rate", float(rate))
            if self.method not in GRADIENT_METHODS:
                raise ArgumentError(
                    f"A learning rate applies to the head and finetune methods; {self.method} takes no such step. "
                    f"Received: method={self.method!r}, learning_rate={rate!r}"
                )
        optimizers = typing.get_args(Optimizer)
        if self.optimizer not in optimizers:
            raise ArgumentError(f"Expected an optimizer among {', '.join(optimizers)}. Received: optimizer={self.optimizer!r}")
        if self.unfreeze is not None:
            if self.method != FINETUNE:
                raise ArgumentError(
                    f"unfreeze applies to the finetune method only; {self.method} keeps the base frozen. Received: unfreeze={self.unfreeze!r}"
                )
            _check_selector(self.unfreeze)

    @property
    def rate(self) -> float:
        """The step size of a gradient method: the one given, else the method's default."""
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LEARNING_RATES[self.method]

    @property
    def selector(self):
        """The base layers finetune trains (a layer selector)."""
        return DEFAULT_UNFREEZE if self.unfreeze is None else self.unfreeze


def _check_selector(selector) -> None:
    """The recipe format's rule for layer selectors (`freeze.layers`, a phase's `unfreeze`)."""
    try:
        pydantic.TypeAdapter(Selector).validate_python(selector)
    except pydantic.ValidationError as error:
        reason = error.errors()[0]["msg"].removeprefix("Value error, ")
        raise ArgumentError(f"unfreeze: {reason}") from None
