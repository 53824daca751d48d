"""Optimizers and learning-rate schedules by name, as recipes write them."""

from __future__ import annotations

import keras


def learning_rate(value: float, schedule: str, total_steps: int, warmup_steps: int = 0):
    """A constant or cosine learning rate, with an optional linear warm-up.

    Built from `CosineDecay` alone (alpha=1 keeps it constant after warm-up),
    so a saved optimizer needs no custom class to load.
    """
    if schedule == "constant" and not warmup_steps:
        return value
    alpha = 1.0 if schedule == "constant" else 0.0
    decay_steps = max(1, total_steps - warmup_steps)
    if not warmup_steps:
        return keras.optimizers.schedules.CosineDecay(value, decay_steps, alpha=alpha)
    return keras.optimizers.schedules.CosineDecay(0.0, decay_steps, alpha=alpha, warmup_target=value, warmup_steps=warmup_steps)


def make_optimizer(name, rate, momentum: float = 0.9, weight_decay: float = 0.004) -> keras.optimizers.Optimizer:
    """adam | adamw | sgd (with momentum) | rmsprop; or a recipe's `{learned: RUN}`, which takes no rate."""
    if hasattr(name, "learned"):
        from workbench.learned.keras_optimizer import LearnedOptimizer

        return LearnedOptimizer(name.learned)
    if name == "adam":
        return keras.optimizers.Adam(rate)
    if name == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=weight_decay)
    if name == "sgd":
        return keras.optimizers.SGD(rate, momentum=momentum)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(rate)
    raise ValueError(f"Expected an optimizer among adam, adamw, sgd, rmsprop. Received: name={name!r}")
