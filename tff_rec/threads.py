"""The driver's TensorFlow thread count: fixed, because results depend on it.

Eigen splits a matrix product's inner dimension by the size of its thread pool, so the same
centralized epoch gave a different loss with 1 and 2 intra-op threads (5.5113 vs 5.5121 after
one epoch; with oneDNN off too). The driver's pool therefore has `INTRA_OP_THREADS` threads on every
machine and for every `--jobs` (a study job no longer gets cores / jobs). The TFF worker runs each
op on one thread (`worker_process.worker_environment`); its concurrency does not change results.
"""
from __future__ import annotations

import os
import sys

INTRA_OP_THREADS = 2
_VARIABLE = "TF_NUM_INTRAOP_THREADS"  # read by TensorFlow when its runtime starts


def fix() -> None:
    """Give the driver `INTRA_OP_THREADS` intra-op threads; call it before TensorFlow runs an op."""
    os.environ[_VARIABLE] = str(INTRA_OP_THREADS)
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(INTRA_OP_THREADS)
        except RuntimeError:  # already running: it read the variable if it was set in time
            pass


def check() -> int:
    """The driver's intra-op thread count; RuntimeError if it is not `INTRA_OP_THREADS` (a
    run's numbers would then differ from the same task's elsewhere)."""
    import tensorflow as tf

    configured = tf.config.threading.get_intra_op_parallelism_threads()
    threads = configured or int(os.environ.get(_VARIABLE, "0"))
    if threads != INTRA_OP_THREADS:
        raise RuntimeError(
            f"TensorFlow runs with {threads or 'its default number of'} intra-op threads; runs need "
            f"{INTRA_OP_THREADS} (results depend on it): call tff_rec.threads.fix() before "
            "TensorFlow runs its first operation"
        )
    return threads
