"""Vigil: security monitoring for Docker hosts and Kubernetes nodes."""

from vigil import compiled as _compiled

__version__ = "0.1.0"

# The analysis hot path as C extension modules, when built from these sources (vigil/compiled.py).
_compiled.activate()
