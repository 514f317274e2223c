"""The error of a bad task or study file, in a module of its own: the spec (`spec.py`) and the
cross-section rules it calls (`rules.py`) both raise it without importing each other."""
from __future__ import annotations


class SpecError(ValueError):
    """A task or study file is invalid; the message names the file and the key."""
