"""An alert's `data` that keeps some values as the JSON text the source sent.

Kubernetes audit events arrive as JSON and go whole into their alert (`data.k8s`). Writing the
bytes that arrived is cheaper than encoding the objects parsed from them again: a third of the
time spent on an audit alert (bench/k8s_audit_throughput.py). Not compiled with the hot path:
mypyc does not compile subclasses of dict.
"""

from __future__ import annotations

from typing import Any

import msgspec


class AlertData(dict[str, Any]):
    """A plain dict to every reader; `verbatim` holds, for some keys, the same value as JSON text.

    The alert encoder (vigil.alert.encode_alert) writes those texts in place of the values, so
    the values must not be changed once the alert is made (no output does).
    """

    __slots__ = ("verbatim",)
    verbatim: dict[str, msgspec.Raw]


def alert_data(data: dict[str, Any], verbatim: dict[str, msgspec.Raw]) -> AlertData:
    """A copy of `data` that keeps `verbatim` (no __init__ of our own: dict's, in C, is faster)."""
    out = AlertData(data)
    out.verbatim = verbatim
    return out
