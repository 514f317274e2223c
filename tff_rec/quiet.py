"""Hide TensorFlow / absl log noise unless the user asks for it.

Must run before TensorFlow is imported: the C++ log level is read from the environment once.
"""
from __future__ import annotations

import logging
import os
import warnings


def silence(verbose: bool = False) -> None:
    """Silence TF C++ logs, absl, Python warnings from the stack (or leave them on if verbose)."""
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    for name in ("absl", "tensorflow", "jax", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # tensor_encoding (TFF's compression aggregator) warns on the root logger at every trace.
    logging.getLogger().addFilter(lambda record: "bitpacking method" not in record.getMessage())
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # absl comes with TF; tolerate its absence in data-only tools
        pass
