"""Vigil: security monitoring for Docker hosts and Kubernetes nodes."""

__version__ = "0.1.0"
