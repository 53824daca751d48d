"""The prototype head: a linear layer that classifies by the nearest class mean.

With `c_k` the mean of class k's support features, the squared euclidean
distance of a feature `z` to it is `||z||^2 - (2 c_k . z - ||c_k||^2)`; `||z||^2`
is the same for every class, so a Dense layer with kernel `2 c_k` and bias
`-||c_k||^2` ranks the classes as the distances do (Snell et al. 2017; the
initialisation of Proto-MAML, Triantafillou et al. 2020).
"""

import tensorflow as tf


def prototype_head(features, labels, ways):
    """The kernel `[..., D, ways]` and bias `[..., ways]` of the nearest-class-mean head.

    Args:
        features: `[..., S, D]` support features (any leading task axes).
        labels: `[..., S]` integer labels in `0..ways-1`; every class must occur.
        ways: the number of classes (a Python int).
    """
    onehot = tf.one_hot(labels, ways, dtype=features.dtype)
    counts = tf.reduce_sum(onehot, axis=-2)
    prototypes = tf.linalg.matmul(onehot, features, transpose_a=True) / counts[..., None]
    kernel = 2.0 * tf.linalg.matrix_transpose(prototypes)
    bias = -tf.reduce_sum(tf.square(prototypes), axis=-1)
    return kernel, bias
