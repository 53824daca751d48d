"""Optimizees: the families of problems a learned optimizer trains on and is tested on.

A family draws batches of problems. Every problem's parameters are one flat
row of a `[problems, parameters]` tensor, so that a batch trains as one tensor
and every coordinate of every problem is one row for the optimizer network.

- `Quadratics`: `||W x - y||^2` with `W` (d x d) and `y` (d) Gaussian per problem,
  as in Andrychowicz et al. (2016), section 3.1.
- `ImageMLPs`: a small MLP classifying images (the paper: one hidden layer of 20
  sigmoid units on MNIST, minibatches of 128), here on an offline image source.
  Each problem is a fresh random initialisation; each step draws its own minibatch.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from workbench.errors import ArgumentError

# The paper's code starts quadratics and MLPs at N(0, 0.01) parameters.
INITIAL_STDDEV = 0.01
ACTIVATIONS = {"sigmoid": tf.sigmoid, "relu": tf.nn.relu, "tanh": tf.tanh}


@dataclasses.dataclass(frozen=True)
class Problems:
    """A batch of problems of one family: what their loss reads, and their starting parameters `[problems, parameters]`."""

    data: dict
    start: tf.Tensor

    @property
    def count(self) -> int:
        return int(self.start.shape[0])


def _rng(seed, stream: int) -> np.random.Generator:
    return np.random.default_rng([stream, *np.atleast_1d(seed).tolist()])


@dataclasses.dataclass(frozen=True)
class Quadratics:
    """`f(x) = ||W x - y||^2`, with `W` and `y` drawn from a standard Gaussian for each problem."""

    dimensions: int = 10
    dtype: str = "float32"

    name = "quadratic"

    @property
    def parameters(self) -> int:
        return self.dimensions

    def sample(self, count: int, seed) -> Problems:
        rng = _rng(seed, 0x71756164)
        d = self.dimensions
        data = {
            "w": tf.constant(rng.standard_normal((count, d, d)), self.dtype),
            "y": tf.constant(rng.standard_normal((count, d)), self.dtype),
        }
        return Problems(data, tf.constant(INITIAL_STDDEV * rng.standard_normal((count, d)), self.dtype))

    def loss(self, data: dict, parameters, step):
        """The loss of every problem, `[problems]`; `step` is unused (quadratics are deterministic)."""
        residual = tf.einsum("bij,bj->bi", data["w"], parameters) - data["y"]
        return tf.reduce_sum(tf.square(residual), axis=-1)

    def describe(self) -> str:
        return f"{self.dimensions}-d quadratics ||Wx - y||^2"


@dataclasses.dataclass(frozen=True)
class ImageMLPs:
    """An MLP of `hidden` layers on flattened images, trained by minibatches; one problem is one random initialisation.

    `images` are `[examples, features]` floats in [0, 1]; `labels` their classes.
    """

    images: np.ndarray = dataclasses.field(repr=False)
    labels: np.ndarray = dataclasses.field(repr=False)
    classes: int
    hidden: tuple[int, ...] = (20,)
    activation: str = "sigmoid"
    batch_size: int = 128
    dtype: str = "float32"

    name = "mlp"

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ArgumentError(f"Expected an activation among {', '.join(ACTIVATIONS)}. Received: activation={self.activation!r}")
        if not self.hidden or any(units < 1 for units in self.hidden):
            raise ArgumentError(f"Expected one or more hidden layers of at least one unit. Received: hidden={self.hidden!r}")
        # Made once, eagerly: a traced loss captures these tensors instead of copying the images into every step of its graph.
        object.__setattr__(self, "_image_tensor", tf.constant(self.images, self.dtype))
        object.__setattr__(self, "_label_tensor", tf.constant(self.labels, tf.int32))

    def variant(self, **changes) -> ImageMLPs:
        """The same images with another architecture (`hidden`, `activation`): the paper's generalisation tests."""
        return dataclasses.replace(self, **changes)

    @property
    def shapes(self) -> list[tuple[tuple[int, int], int]]:
        """`((inputs, outputs), outputs)` of each Dense layer: its kernel and bias."""
        sizes = [self.images.shape[1], *self.hidden, self.classes]
        return [((fan_in, fan_out), fan_out) for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True)]

    @property
    def parameters(self) -> int:
        return sum(rows * columns + bias for (rows, columns), bias in self.shapes)

    def sample(self, count: int, seed) -> Problems:
        rng = _rng(seed, 0x6D6C70)
        start = tf.constant(INITIAL_STDDEV * rng.standard_normal((count, self.parameters)), self.dtype)
        minibatch_seed = tf.constant(rng.integers(0, 2**31 - 1, size=2), tf.int32)
        return Problems({"minibatch_seed": minibatch_seed}, start)

    def loss(self, data: dict, parameters, step):
        """Each problem's cross-entropy on its minibatch of step `step`, `[problems]`."""
        count = tf.shape(parameters)[0]
        seed = data["minibatch_seed"] + tf.stack([0, tf.cast(step, tf.int32)])
        indices = tf.random.stateless_uniform((count, self.batch_size), seed, maxval=len(self.labels), dtype=tf.int32)
        x = tf.gather(self._image_tensor, indices)
        labels = tf.gather(self._label_tensor, indices)
        activation, offset = ACTIVATIONS[self.activation], 0
        for index, ((rows, columns), bias) in enumerate(self.shapes):
            kernel = tf.reshape(parameters[:, offset : offset + rows * columns], (-1, rows, columns))
            offset += rows * columns
            x = tf.einsum("bni,bio->bno", x, kernel) + parameters[:, None, offset : offset + bias]
            offset += bias
            if index < len(self.shapes) - 1:
                x = activation(x)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=x)
        return tf.reduce_mean(losses, axis=-1)

    def describe(self) -> str:
        layers = " x ".join(str(units) for units in self.hidden)
        return f"MLP {self.images.shape[1]}-{layers}-{self.classes} ({self.activation}), batch {self.batch_size}"


def glyph_images(classes: int, samples: int, image_size, seed: int, first_class: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic glyph drawings, flattened to `[examples, pixels]` in [0, 1], with their labels."""
    from workbench.data.glyphs import draw_glyphs

    images, labels = draw_glyphs(range(first_class, first_class + classes), samples, tuple(image_size), seed=seed)
    return images.reshape(len(images), -1).astype(np.float32) / 255.0, labels
