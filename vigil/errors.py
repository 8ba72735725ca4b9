"""One error tree for the whole of Vigil, so callers can catch by meaning."""

from __future__ import annotations

from dataclasses import dataclass


class VigilError(Exception):
    """Base of every error Vigil raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a file a user wrote: where it is and what to do about it."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class LoadError(VigilError):
    """A user-written file (rules, config) is wrong; carries every problem found, not just the first."""

    def __init__(self, what: str, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{what}: {len(problems)} problem(s)\n{lines}")


class ConfigError(LoadError):
    """The configuration file is wrong."""


class RuleLoadError(LoadError):
    """A rule file is wrong; nothing was loaded."""


class EventError(VigilError):
    """An event from outside could not be understood (malformed, truncated, too large)."""


class ListenError(VigilError):
    """A server in Vigil could not listen on its address (port in use, not allowed, no such address)."""
