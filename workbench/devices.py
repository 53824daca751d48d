"""Where training runs: the one place that decides about accelerators and XLA."""

from __future__ import annotations


def use_xla(setting) -> bool:
    """A recipe's `jit_compile`: true, false, or auto (XLA where a GPU is visible).

    On CPU, XLA made conv nets many times slower here (DESIGN.md), so auto keeps
    it for GPUs.
    """
    if setting == "auto":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    return bool(setting)
