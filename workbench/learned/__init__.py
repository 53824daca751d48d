"""Learned optimizers (Andrychowicz et al. 2016): a coordinatewise LSTM that learns the update rule.

Importing this package registers the Keras objects a saved learned optimizer
needs (`GradientPreprocessing`, and `LearnedOptimizer` for models compiled with
one), so that its `.keras` file loads with `keras.saving.load_model(path,
safe_mode=True)` and no code from the file.
"""

from workbench.learned.keras_optimizer import LearnedOptimizer, load_optimizer_net
from workbench.learned.optimizer_net import build_optimizer_net
from workbench.learned.preprocessing import GradientPreprocessing, preprocess_gradients

__all__ = ["GradientPreprocessing", "LearnedOptimizer", "build_optimizer_net", "load_optimizer_net", "preprocess_gradients"]
