"""Follows one log file by path, through rotation by rename and by copy-truncate, from a saved offset.

The saved state is the file's identity (device, inode), how far its lines were handed on, and a
fingerprint of its first bytes. That is enough to tell, after a restart or between two polls:
- same file, grown: go on from the offset;
- same inode but shorter, or other first bytes: copy-truncated; the lines not yet read are in the
  copy (found by its first bytes), then the file is read again from 0;
- another inode at the path: renamed; the old file is read to its end first (kept open while running;
  found again among the path's siblings by inode after a restart), then the new one from 0.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vigil.agent.modules.logs.line_splitter import Line, LineSplitter

log = logging.getLogger(__name__)

HEAD_BYTES = 256  # how much of a file's start identifies it
READ_BYTES = 256 * 1024
QUIET_SECONDS = 1.0  # a rotated file is read until it has not changed for this long


@dataclass(frozen=True)
class TailState:
    dev: int
    ino: int
    offset: int
    head: str  # hash of the first `head_len` bytes
    head_len: int

    def to_state(self) -> dict[str, Any]:
        return {"dev": self.dev, "ino": self.ino, "offset": self.offset, "head": self.head, "head_len": self.head_len}

    @classmethod
    def from_state(cls, state: Any) -> TailState | None:
        try:
            return cls(int(state["dev"]), int(state["ino"]), int(state["offset"]), str(state["head"]),
                       int(state["head_len"]))
        except (TypeError, KeyError, ValueError):
            return None

    @classmethod
    def list_from_state(cls, state: Any) -> list[TailState]:
        """A path's saved files, oldest first; what cannot be read is left out (that file is read whole)."""
        entries = state if isinstance(state, list) else []
        return [s for s in map(cls.from_state, entries) if s is not None]


def _fingerprint(fd: int, length: int) -> str:
    return hashlib.blake2b(os.pread(fd, length, 0), digest_size=12).hexdigest()


def _same_start(fd: int, size: int, saved: TailState) -> bool:
    """The open file (`size` bytes) begins with the bytes `saved` fingerprinted, if it fingerprinted any."""
    return saved.head_len == 0 or (size >= saved.head_len and _fingerprint(fd, saved.head_len) == saved.head)


class _Reader:
    """One open file and the lines read from it."""

    def __init__(self, path: str, fd: int, offset: int, limit: int) -> None:
        self.path = path
        self.fd = fd
        st = os.fstat(fd)
        self.dev, self.ino = st.st_dev, st.st_ino
        self.splitter = LineSplitter(limit, offset)
        self.head_len = 0
        self.head = ""
        self._refresh_head()

    @property
    def handed(self) -> int:
        """The offset past the last whole line read: where to start again."""
        return self.splitter.offset - self.splitter.pending

    def _refresh_head(self) -> None:
        size = os.fstat(self.fd).st_size
        if self.head_len < HEAD_BYTES and size > self.head_len:
            self.head_len = min(size, HEAD_BYTES)
            self.head = _fingerprint(self.fd, self.head_len)

    def read(self, budget: int) -> tuple[list[Line], bool]:
        """Lines from the offset on, up to about `budget` bytes; True when the file's end was reached."""
        lines: list[Line] = []
        while budget > 0:
            chunk = os.pread(self.fd, min(READ_BYTES, budget), self.splitter.offset)
            if not chunk:
                self._refresh_head()
                return lines, True
            budget -= len(chunk)
            lines.extend(self.splitter.feed(chunk))
        self._refresh_head()
        return lines, False

    def truncated(self) -> bool:
        """Shorter than what was read, or other first bytes: the file was emptied and written again."""
        st = os.fstat(self.fd)
        if st.st_size < self.splitter.offset:
            return True
        if self.head_len > 0 and _fingerprint(self.fd, self.head_len) != self.head:
            return True
        self._refresh_head()  # know more of a young file's start, even before it is read
        return False

    def restart(self) -> None:
        """The file was emptied and written again: read it from its start, and learn that start anew."""
        self.splitter.reset(0)
        self.head_len = 0
        self._refresh_head()

    def quiet(self) -> bool:
        """Unchanged for a while: a writer that kept the file open after a rename has moved on by now."""
        return time.time() - os.fstat(self.fd).st_mtime >= QUIET_SECONDS

    def state(self) -> TailState:
        return TailState(self.dev, self.ino, self.handed, self.head, self.head_len)

    def close(self) -> None:
        os.close(self.fd)


def _open(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None


def _siblings(path: str) -> list[str]:
    """Where logrotate, Docker and kubelet put a rotated file: `x.1`, `x-20240101`, `x.log.20240101-...`,
    and lumberjack (kube-apiserver's audit log): `audit-2026-11-27T10-00-00.000.log`.

    Through a link (kubelet's /var/log/containers/*.log), beside the file it points to."""
    path = os.path.realpath(path)
    found = set(glob.glob(glob.escape(path) + ".*")) | set(glob.glob(glob.escape(path) + "-*"))
    stem, ext = os.path.splitext(path)
    if ext:
        found |= set(glob.glob(glob.escape(stem) + "-*" + glob.escape(ext)))
    found.discard(path)
    return sorted((p for p in found if not p.endswith((".gz", ".bz2", ".xz", ".zst"))),
                  key=lambda p: -_mtime(p))


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


class FileTail:
    """Reads one path's new lines, poll after poll; `state()` is what to save with the lines handed on."""

    def __init__(self, path: str, limit: int, saved: list[TailState] | None, from_end: bool) -> None:
        self.path = path
        self.limit = limit
        self.current: _Reader | None = None
        self.draining: list[_Reader] = []  # rotated away, read to their end before the current file
        self.rotations = 0
        self.truncations = 0
        self._saved = saved or []
        self._from_end = from_end

    def _start(self) -> None:
        """Open the path (once it exists) at the right offset, with what a saved state says was missed."""
        fd = _open(self.path)
        if fd is None:
            self._from_end = False  # it appears later: read whole
            return
        saved, self._saved = self._saved, []
        st = os.fstat(fd)
        offset = st.st_size if self._from_end and not saved else 0
        self._from_end = False  # a file that appears later is read whole
        for entry in saved:  # oldest first: rotated files not finished, then the file at the path
            if (st.st_dev, st.st_ino) != (entry.dev, entry.ino):
                self._recover_renamed(entry)
            elif st.st_size >= entry.offset and _same_start(fd, st.st_size, entry):
                offset = entry.offset
            else:
                self._recover_copy(entry)
        self.current = _Reader(self.path, fd, offset, self.limit)

    def _recover_renamed(self, saved: TailState) -> None:
        def same_file(fd: int, st: os.stat_result) -> bool:
            return (st.st_dev, st.st_ino) == (saved.dev, saved.ino) and st.st_size >= saved.offset

        sibling = self._drain_sibling(same_file, saved.offset)
        if sibling is not None:
            log.info("%s was rotated to %s while Vigil was down; reading the rest of it first", self.path, sibling)
            self.rotations += 1

    def _recover_copy(self, saved: TailState) -> None:
        """Copy-truncate: the lines after the offset are in the copy, which starts with the same bytes."""
        self.truncations += 1
        if saved.head_len == 0:
            return

        def copy_of(fd: int, st: os.stat_result) -> bool:
            return st.st_size >= saved.offset and _same_start(fd, st.st_size, saved)

        if self._drain_sibling(copy_of, saved.offset) is None:
            log.warning("%s was truncated; its copy was not found, so lines after offset %d may be missing",
                        self.path, saved.offset)

    def _drain_sibling(self, fits: Callable[[int, os.stat_result], bool], offset: int) -> str | None:
        """Read from `offset` the first rotated sibling (newest first) that `fits`; its path, or None."""
        for sibling in _siblings(self.path):
            fd = _open(sibling)
            if fd is None:
                continue
            if fits(fd, os.fstat(fd)):
                self.draining.append(_Reader(sibling, fd, offset, self.limit))
                return sibling
            os.close(fd)
        return None

    def poll(self, budget: int = 4 * 1024 * 1024) -> list[Line]:
        """New whole lines (rotated files' last lines first); the state after them is `state()`."""
        if self.current is not None:
            if self.current.truncated():
                self._truncated(self.current)
            elif self.draining:  # waiting on older files: this one may be rotated meanwhile too
                self._check_rotation(self.current)
        lines: list[Line] = []
        while self.draining and budget > 0:
            old = self.draining[0]
            got, at_end = old.read(budget)
            lines.extend(got)
            budget -= sum(len(x.data) + 1 for x in got) or 1
            if not at_end or not old.quiet():
                return lines  # the writer may not have reopened its file yet: wait for its last lines
            if (rest := old.splitter.flush()) is not None:
                lines.append(rest)
            old.close()
            self.draining.pop(0)
        if self.current is None:
            self._start()
        if self.current is None or self.draining:
            return lines  # what was found to read first is read at the next poll
        current = self.current
        got, at_end = current.read(budget)
        lines.extend(got)
        if at_end:
            self._check_rotation(current)
        return lines

    def _truncated(self, current: _Reader) -> None:
        self._recover_copy(current.state())
        current.restart()

    def _check_rotation(self, current: _Reader) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        except OSError:  # not allowed to look (any more): keep reading what is open
            return
        if st is not None and (st.st_dev, st.st_ino) == (current.dev, current.ino):
            return
        # Renamed or deleted: whatever is still written to the old file is read before the new one,
        # which is opened now, so that a copy-truncate of it meanwhile is seen too.
        self.draining.append(current)
        self.current = None
        if st is not None:
            self.rotations += 1
            self._start()

    def _readers(self) -> list[_Reader]:
        """Every file open, oldest first."""
        return [*self.draining, *([self.current] if self.current is not None else [])]

    def state(self) -> list[dict[str, Any]] | None:
        """The resume point: every file not read to its end, oldest first, so a restart loses nothing."""
        return [reader.state().to_state() for reader in self._readers()] or None

    def close(self) -> None:
        for reader in self._readers():
            reader.close()
        self.draining.clear()
        self.current = None
