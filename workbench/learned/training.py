"""Meta-training a learned optimizer by truncated backpropagation through its optimizees' training.

Andrychowicz et al. (2016): the optimizer network `m` (weights phi) trains a
batch of optimizees for a horizon of `steps` updates, theta_{t+1} = theta_t +
m(grad f(theta_t)). The horizon is cut into unrolls of `unroll` steps; after
each unroll, Adam updates phi by the gradient of

    L(phi) = mean over optimizees of  sum_{t=1..unroll} f_t(theta_t)

and the next unroll starts from where this one ended, its parameters and LSTM
states treated as constants (truncated backpropagation through time). As in the
paper, the optimizee's gradient is an input, not a function of phi: its second
derivatives are dropped (`second_derivatives=False`, a stop-gradient).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import keras
import numpy as np
import tensorflow as tf

from workbench.errors import ArgumentError, TrainingError
from workbench.learned.optimizer_net import initial_state, propose_updates

log = logging.getLogger(__name__)


def unroll(net: keras.Model, family, data: dict, parameters, state: list, first_step, steps: int, second_derivatives: bool = False):
    """`steps` learned updates of a batch of optimizees from step `first_step`.

    Returns `(meta_loss, parameters, state)`: the unroll's objective (differentiable
    in the network's weights), and where the optimizees and LSTM states end.
    """
    meta_loss = tf.zeros((), parameters.dtype)
    for offset in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(parameters)
            losses = family.loss(data, parameters, first_step + offset)
            total = tf.reduce_sum(losses)  # the sum: each optimizee's gradient is its own
        gradients = tape.gradient(total, parameters)
        if not second_derivatives:
            gradients = tf.stop_gradient(gradients)
        if offset:  # f(theta_0) does not depend on the network within this unroll
            meta_loss += tf.reduce_mean(losses)
        updates, state = propose_updates(net, gradients, state)
        parameters = parameters + updates
    meta_loss += tf.reduce_mean(family.loss(data, parameters, first_step + steps))
    return meta_loss, parameters, state


def meta_gradient(net: keras.Model, family, data: dict, parameters, state: list, first_step, steps: int, second_derivatives: bool = False):
    """The gradient of one unroll's objective in the network's trainable weights, with the unroll's results."""
    with tf.GradientTape() as tape:
        meta_loss, parameters, state = unroll(net, family, data, parameters, state, first_step, steps, second_derivatives)
    return tape.gradient(meta_loss, net.trainable_variables), meta_loss, parameters, state


@dataclasses.dataclass
class TrainingRecord:
    """What meta-training did: per iteration, the mean meta-loss of its unrolls and the optimizees' loss at the horizon."""

    meta_loss: list[float] = dataclasses.field(default_factory=list)
    final_loss: list[float] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def as_json(self, points: int = 100) -> dict:
        """The record, thinned to about `points` evenly spaced iterations."""
        every = max(1, math.ceil(len(self.meta_loss) / points))
        return {
            "iterations": len(self.meta_loss),
            "seconds": self.seconds,
            "every": every,
            "meta_loss": self.meta_loss[::every],
            "final_loss": self.final_loss[::every],
        }


class MetaTrainer:
    """Trains `net` on batches of `family`'s problems, `optimizees` at a time, over horizons of `steps` in unrolls of `unroll`."""

    def __init__(
        self,
        net: keras.Model,
        family,
        optimizer: keras.optimizers.Optimizer,
        *,
        steps: int,
        unroll: int,
        optimizees: int,
        jit_compile: bool = False,
    ):
        if unroll < 1 or steps % unroll:
            raise ArgumentError(f"The horizon must be a whole number of unrolls. Received: steps={steps}, unroll={unroll}")
        self.net, self.family, self.optimizer = net, family, optimizer
        self.steps, self.unroll_steps, self.optimizees = steps, unroll, optimizees
        self.optimizer.build(net.trainable_variables)
        self._meta_step = tf.function(self._step, jit_compile=jit_compile, reduce_retracing=True)

    def _step(self, data, parameters, state, first_step):
        gradients, meta_loss, parameters, state = meta_gradient(
            self.net, self.family, data, parameters, state, first_step, self.unroll_steps
        )
        self.optimizer.apply(gradients, self.net.trainable_variables)
        return meta_loss, parameters, state

    def train(self, iterations: int, seed: int, record: TrainingRecord | None = None, log_every: int = 100) -> TrainingRecord:
        """`iterations` horizons, each on a new batch of problems drawn from `(seed, iteration)`."""
        record = record or TrainingRecord()
        clock = time.perf_counter()
        for iteration in range(len(record.meta_loss), iterations):
            problems = self.family.sample(self.optimizees, seed=(seed, iteration))
            parameters = problems.start
            state = initial_state(self.net, int(np.prod(parameters.shape)), parameters.dtype)
            losses = []
            for first in range(0, self.steps, self.unroll_steps):
                meta_loss, parameters, state = self._meta_step(problems.data, parameters, state, tf.constant(first))
                losses.append(float(meta_loss))
            final = float(tf.reduce_mean(self.family.loss(problems.data, parameters, self.steps)))
            if not all(math.isfinite(value) for value in [*losses, final]):
                raise TrainingError(
                    f"meta-training diverged at iteration {iteration + 1} (meta-loss {losses}); "
                    "lower outer.learning_rate or shorten inner.unroll"
                )
            record.meta_loss.append(float(np.mean(losses)))
            record.final_loss.append(final)
            if (iteration + 1) % log_every == 0:
                recent = slice(-log_every, None)
                log.info(
                    "iteration %d: meta-loss %.4f, loss at step %d %.4f",
                    iteration + 1,
                    np.mean(record.meta_loss[recent]),
                    self.steps,
                    np.mean(record.final_loss[recent]),
                )
        record.seconds += time.perf_counter() - clock
        return record
