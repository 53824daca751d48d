"""Where training runs: the one place that decides about accelerators and XLA."""

from __future__ import annotations


def use_xla(setting, convolutional: bool = True) -> bool:
    """A recipe's `jit_compile`: true, false, or auto.

    Auto compiles with XLA where a GPU is visible, and on CPU for nets without
    convolutions: measured here, XLA made the sinusoid meta step 1.4x faster on
    CPU and conv nets many times slower (DESIGN.md, benchmarks/RESULTS.md).
    """
    if setting == "auto":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU")) or not convolutional
    return bool(setting)
