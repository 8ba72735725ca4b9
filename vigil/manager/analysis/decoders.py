"""Decoders turn an event into named fields. Structured sources arrive as JSON already."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from vigil.errors import EventError
from vigil.event import Event
from vigil.manager.analysis.fields import Fields


@dataclass(slots=True)
class Decoded:
    name: str
    parent: str | None
    fields: Fields


def decode(event: Event) -> Decoded:
    """Structured events keep their data; a bare JSON line (as fed to logtest) is parsed first."""
    data = event.data
    if not data and event.raw is not None and event.decoder == "json":
        try:
            parsed = orjson.loads(event.raw)
        except orjson.JSONDecodeError as exc:
            raise EventError(f"not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise EventError("a JSON event must be an object")
        data = parsed
        event.data = data
    return Decoded(name=event.decoder, parent=None, fields=Fields(data, event.raw))
