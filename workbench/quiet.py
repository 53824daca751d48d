"""Import TensorFlow without its C++ start-up lines.

TensorFlow 2.21 prints its oneDNN notice and "Could not find cuda drivers"
through absl before it reads `TF_CPP_MIN_LOG_LEVEL`, so the level alone does not
silence them; nor CUDA's "failed call to cuInit" on a machine without a GPU, when
TensorFlow first looks for devices. Both go to a temporary file while TensorFlow
loads and looks, and are shown only if that fails.
"""

from __future__ import annotations

import os
import sys
import tempfile


def import_tensorflow() -> None:
    """Import TensorFlow once, holding back what its native libraries write to stderr meanwhile."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            import tensorflow

            # Looking for GPUs makes CUDA's "failed call to cuInit" line on machines without one: look now, held back too.
            tensorflow.config.list_physical_devices("GPU")
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
