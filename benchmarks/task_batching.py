"""Would batching the tasks of a meta-batch as grouped convolutions beat the workbench's loop over tasks?

`MetaLearner` runs conv nets one task at a time in a `tf.while_loop`, because
`tf.vectorized_map` cannot batch per-task filters. The alternative is to stack the
tasks on the channel axis and run one grouped convolution (`groups` = tasks) per layer.
This times both on conv4's most expensive layer (3x3, 64 -> 64 channels at 14x14), as
a second-order MAML step does it: an inner step on each task's support images, the
query loss under the fast weights, and its gradient through the inner step with respect
to the shared initial filters. 5-way 1-shot: 5 support and 75 query images per task,
32 tasks. One intra-op thread, as `maml_speed.py --threads 1`; median of `--reps` calls
after one traced call. Both sides' meta-gradients are compared first.

    python benchmarks/task_batching.py [--tasks 32] [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

SIZE, CHANNELS, SUPPORT, QUERY, RATE = 14, 64, 5, 75, 0.4


def build(tasks: int):
    import tensorflow as tf

    def conv(x, filters):
        return tf.nn.relu(tf.nn.conv2d(x, filters, 1, "SAME"))

    def loss(y):
        return tf.reduce_mean(tf.square(y))

    @tf.function
    def looped(filters, support, query):
        """One task at a time, accumulating meta-gradients, as the workbench's loop strategy."""

        def body(i, total):
            with tf.GradientTape() as outer:
                outer.watch(filters)
                with tf.GradientTape() as inner:
                    inner.watch(filters)
                    inner_loss = loss(conv(support[i], filters))
                fast = filters - RATE * inner.gradient(inner_loss, filters)
                query_loss = loss(conv(query[i], fast))
            return i + 1, total + outer.gradient(query_loss, filters)

        _, total = tf.while_loop(lambda i, _: i < tasks, body, (tf.constant(0), tf.zeros_like(filters)))
        return total / tasks

    def stack(x):
        """[tasks, images, h, w, c] -> [images, h, w, tasks * c]: task t's channels are group t."""
        return tf.reshape(tf.transpose(x, [1, 2, 3, 0, 4]), [x.shape[1], SIZE, SIZE, tasks * CHANNELS])

    def grouped_conv(x, per_task_filters):
        """One convolution with a group per task; `per_task_filters` is [tasks, 3, 3, c, c]."""
        filters = tf.reshape(tf.transpose(per_task_filters, [1, 2, 3, 0, 4]), [3, 3, CHANNELS, tasks * CHANNELS])
        return tf.nn.relu(tf.nn.conv2d(x, filters, 1, "SAME"))

    @tf.function
    def grouped(filters, support, query):
        """All tasks at once: per-task fast filters, one grouped convolution per pass."""
        support, query = stack(support), stack(query)
        with tf.GradientTape() as outer:
            outer.watch(filters)
            tiled = tf.tile(filters[None], [tasks, 1, 1, 1, 1])
            with tf.GradientTape() as inner:
                inner.watch(tiled)
                # Each task's loss is a mean over its own outputs; their sum keeps tasks' gradients apart.
                inner_loss = tasks * loss(grouped_conv(support, tiled))
            fast = tiled - RATE * inner.gradient(inner_loss, tiled)
            query_loss = loss(grouped_conv(query, fast))
        return outer.gradient(query_loss, filters)

    return looped, grouped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    rng = np.random.default_rng(0)
    filters = tf.constant(rng.normal(0, 0.05, (3, 3, CHANNELS, CHANNELS)), tf.float32)
    support = tf.constant(rng.normal(size=(args.tasks, SUPPORT, SIZE, SIZE, CHANNELS)), tf.float32)
    query = tf.constant(rng.normal(size=(args.tasks, QUERY, SIZE, SIZE, CHANNELS)), tf.float32)
    sides = dict(zip(("loop", "grouped"), build(args.tasks), strict=True))

    gradients = {name: side(filters, support, query).numpy() for name, side in sides.items()}  # traces
    difference = np.linalg.norm(gradients["loop"] - gradients["grouped"]) / np.linalg.norm(gradients["loop"])
    print(f"meta-gradient, grouped vs loop: relative L2 difference {difference:.1e}\n")
    seconds = {}
    for name, side in sides.items():
        times = []
        for _ in range(args.reps):
            started = time.perf_counter()
            side(filters, support, query).numpy()
            times.append(time.perf_counter() - started)
        seconds[name] = statistics.median(times)
    print(f"{'side':<8} {'s per meta-batch':>16}")
    for name, value in seconds.items():
        print(f"{name:<8} {value:>16.3f}")
    ratio = seconds["loop"] / seconds["grouped"]
    print(f"\ngrouped speed-up over the loop: {ratio:.2f}x")
    print(f"summary: loop_s={seconds['loop']:.3f} grouped_s={seconds['grouped']:.3f} speedup={ratio:.2f} grad_rel_diff={difference:.1e}")


if __name__ == "__main__":
    main()
