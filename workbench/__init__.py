"""workbench: transfer learning and meta-learning from YAML recipes, on Keras 3.

Importing the package is cheap: it never imports TensorFlow. Saved models hold
standard Keras layers only, so `keras.models.load_model` needs nothing from here.
"""

__version__ = "0.1.0"
