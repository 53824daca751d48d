"""`workbench export`: a classifier as a SavedModel, ONNX or LiteRT file, proven equal to the Keras model.

Every export is checked before it is kept: the exported file, run by its own
runtime in a fresh process, must give the Keras model's probabilities on the
run's held-out images. What was checked goes beside it in `PATH.export.json`.

Importing this package is cheap: the runtime process imports only the one
runtime it needs (`workbench.export.runtime`), never Keras.
"""
