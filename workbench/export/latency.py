"""Latency per image and throughput of one way of predicting, at the batch sizes a server and a phone use."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

BATCH_SIZES = (1, 32)
WARM_UP = 3  # first calls build functions and allocate buffers
MIN_CALLS = 5
MAX_CALLS = 200
TIME_BUDGET_S = 0.5  # per batch size: enough calls for a steady median on a slow machine


def measure(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> dict[str, dict[str, float]]:
    """`{"latency_ms": {"1": ms per image, "32": ...}, "throughput_per_s": {"1": images per second, ...}}`.

    Medians over repeated calls on the same batch; the images are repeated to fill a batch.
    """
    latency, throughput = {}, {}
    for size in BATCH_SIZES:
        batch = np.ascontiguousarray(np.resize(images, (size, *images.shape[1:])).astype("float32"))
        for _ in range(WARM_UP):
            predict(batch)
        times, started = [], time.perf_counter()
        while len(times) < MIN_CALLS or (len(times) < MAX_CALLS and time.perf_counter() - started < TIME_BUDGET_S):
            begin = time.perf_counter()
            predict(batch)
            times.append(time.perf_counter() - begin)
        seconds = float(np.median(times))
        latency[str(size)] = round(1000 * seconds / size, 4)
        throughput[str(size)] = round(size / seconds, 1)
    return {"latency_ms": latency, "throughput_per_s": throughput}
