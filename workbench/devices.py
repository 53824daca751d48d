"""Where training runs: the one place that decides about devices, XLA and `tf.distribute`.

The runner calls `strategy_for(recipe.distribute)` before anything else touches
TensorFlow and creates every model, optimizer and variable of the run inside
that strategy's scope; the training code reads it back with
`tf.distribute.get_strategy()`. Growing past one machine changes this module,
not the runners.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os

from workbench.errors import RunError

log = logging.getLogger(__name__)


def use_xla(setting, convolutional: bool = True) -> bool:
    """A recipe's `jit_compile`: true, false, or auto.

    Auto compiles with XLA where a GPU is visible, and on CPU for nets without
    convolutions: measured here, XLA made the sinusoid meta step 1.4x faster on
    CPU and conv nets many times slower (benchmarks/RESULTS.md).
    """
    if setting == "auto":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU")) or not convolutional
    return bool(setting)


def strategy_for(distribute):
    """The `tf.distribute.Strategy` of a recipe's `distribute` section.

    - `default`: TensorFlow's default strategy (one device).
    - `mirrored`: one replica per device in `devices`, or per local GPU when
      none are named. Naming CPU devices beyond the first (`/cpu:1`) splits
      the CPU into that many logical devices: a way to exercise replication on
      a machine without GPUs, for tests, not for speed.
    - `multi_worker`: one process per machine, the cluster and this process's
      task read from the standard `TF_CONFIG` environment variable.

    Call it before TensorFlow runs anything: logical devices can only be made then.
    """
    import tensorflow as tf

    if distribute.strategy == "default":
        return tf.distribute.get_strategy()
    if distribute.strategy == "mirrored":
        return _mirrored(distribute.devices)
    return _multi_worker()


def _mirrored(devices):
    import tensorflow as tf

    if devices:
        names = [_canonical(name) for name in devices]
        cpus = 1 + max((int(name.split(":")[1]) for name in names if name.startswith("CPU")), default=0)
        if cpus > 1:
            _split_cpu(cpus)
        available = {_canonical(device.name) for device in tf.config.list_logical_devices()}
        missing = [name for name in names if name not in available]
        if missing:
            raise RunError(f"distribute.devices: no device {missing[0]} here; this machine has {', '.join(sorted(available))}")
        on_cpu = all(name.startswith("CPU") for name in names)
        # Between CPU devices, TensorFlow's default collective all-reduce aborts with mismatched
        # collectives once BatchNormalization synchronizes its statistics; reducing on one device works.
        return tf.distribute.MirroredStrategy(
            [f"/{name.lower()}" for name in names], cross_device_ops=tf.distribute.ReductionToOneDevice() if on_cpu else None
        )
    if not tf.config.list_physical_devices("GPU"):
        log.warning("distribute: mirrored found no GPU; training runs on one CPU replica")
    return tf.distribute.MirroredStrategy()


def _canonical(name: str) -> str:
    """`/job:localhost/replica:0/task:0/device:GPU:1`, `/gpu:1` or `GPU:1` -> `GPU:1`."""
    kind, index = name.rsplit("/", 1)[-1].removeprefix("device:").split(":")
    return f"{kind.upper()}:{index}"


def _split_cpu(count: int) -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:  # TensorFlow already runs: its devices are fixed
        if len(tf.config.list_logical_devices("CPU")) < count:
            raise RunError(
                f"distribute.devices: {count} logical CPU devices must be made before TensorFlow starts; "
                "run the recipe in a new process (workbench run)"
            ) from None


def _multi_worker():
    import tensorflow as tf

    config = os.environ.get("TF_CONFIG")
    if not config:
        raise RunError("distribute: multi_worker reads the cluster from the TF_CONFIG environment variable, which is not set")
    try:
        parsed = json.loads(config)
        parsed["cluster"]["worker"], parsed["task"]["type"], parsed["task"]["index"]  # noqa: B018 - the fields every launcher sets
    except (ValueError, KeyError, TypeError):
        raise RunError(
            'TF_CONFIG: expected JSON like {"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}'
        ) from None
    _fix_keras_multi_worker_reduction()
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy) -> bool:
    """Whether this process writes the run directory: always, except on the non-chief workers of a cluster.

    TensorFlow's convention: the task of type `chief`, or worker 0 where the
    cluster has no chief.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def replicas() -> int:
    """How many replicas the current strategy trains on (1 outside a `distribute` section)."""
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


@contextlib.contextmanager
def distributed(model):
    """While inside, `model.fit` and `model.evaluate` train and score `model` under the current strategy as one model would.

    With several replicas, BatchNormalization layers take their statistics
    over the global batch (`synchronized`), so that results match one device
    up to reduction order. Under `multi_worker`, Keras's eager symbolic build
    (which fails there, keras-team/keras#20585) is skipped by letting the model
    find its strategy in the enclosing scope. Both are undone on exit, so the
    saved model is the same as one trained on one device.
    """
    import keras
    import tensorflow as tf

    from workbench.models.layers import all_layers

    strategy = tf.distribute.get_strategy()
    changed = []
    if strategy.num_replicas_in_sync > 1:
        changed = [layer for layer in all_layers(model) if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized]
    for layer in changed:
        layer.synchronized = True
    own_strategy = model._distribute_strategy
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        model._distribute_strategy = None
    try:
        yield model
    finally:
        model._distribute_strategy = own_strategy
        for layer in changed:
            layer.synchronized = False


def _fix_keras_multi_worker_reduction() -> None:
    """Make Keras 3's train and test steps reduce their scalar logs under `MultiWorkerMirroredStrategy`.

    Keras reduces them with `strategy.reduce("MEAN", value, axis=0)`, which
    fails on scalars (keras-team/keras#20585, seen with Keras 3.15); the mean
    over replicas is `axis=None`. Applied only when a recipe asks for
    `multi_worker`; every other path is Keras's own.
    """
    from keras.src.backend.tensorflow import trainer

    original = getattr(trainer.reduce_per_replica, "__wrapped__", trainer.reduce_per_replica)

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            import tensorflow as tf

            return tf.nest.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None) if trainer._is_per_replica_instance(v) else v, values
            )
        return original(values, strategy, reduction)

    reduce_per_replica.__wrapped__ = original
    trainer.reduce_per_replica = reduce_per_replica
