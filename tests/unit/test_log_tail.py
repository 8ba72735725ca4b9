"""Following log files: lines across reads, long lines, rotation by rename and copy-truncate, restarts."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from vigil.agent.modules.logs.file_tail import FileTail, TailState
from vigil.agent.modules.logs.line_splitter import LineSplitter


def texts(lines: list) -> list[str]:
    return [x.data.decode() for x in lines]


def drain(tail: FileTail, rounds: int = 50) -> list[str]:
    """Poll until nothing new comes for a few rounds (rotated files are finished once quiet)."""
    out: list[str] = []
    idle = 0
    while idle < 3 and rounds:
        got = tail.poll()
        out += texts(got)
        idle = 0 if got or tail.draining else idle + 1
        rounds -= 1
        if tail.draining:
            time.sleep(0.1)
    return out


def test_splitter_joins_lines_across_reads_and_keeps_offsets() -> None:
    splitter = LineSplitter(limit=100, offset=10)
    assert splitter.feed(b"first li") == []
    lines = splitter.feed(b"ne\r\nsecond\nthi")
    assert texts(lines) == ["first line", "second"]
    assert [(x.start, x.end) for x in lines] == [(10, 22), (22, 29)]
    assert splitter.pending == 3
    rest = splitter.flush()
    assert rest is not None and rest.data == b"thi" and rest.start == 29


def test_splitter_keeps_the_start_of_a_long_line_and_its_size() -> None:
    splitter = LineSplitter(limit=8)
    lines = []
    for _ in range(1000):
        lines += splitter.feed(b"x" * 10_000)
    lines += splitter.feed(b"\nshort\n")
    assert [(x.data, x.size, x.cut) for x in lines] == [(b"x" * 8, 10_000_000, True), (b"short", 5, False)]


def test_from_end_skips_what_is_there_and_reads_what_comes(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text("old 1\nold 2\n")
    tail = FileTail(str(path), 1000, None, from_end=True)
    assert tail.poll() == []
    with path.open("a") as f:
        f.write("new 1\nnew 2\nunfinished")
    assert drain(tail) == ["new 1", "new 2"]
    with path.open("a") as f:
        f.write(" now\n")
    assert drain(tail) == ["unfinished now"]
    tail.close()


def test_rename_rotation_reads_the_old_file_to_its_end_then_the_new_one(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text("a1\na2\n")
    tail = FileTail(str(path), 1000, None, from_end=False)
    assert drain(tail) == ["a1", "a2"]
    with path.open("a") as f:
        f.write("a3\n")  # written, not yet read, when the file is renamed
    os.rename(path, tmp_path / "app.log.1")
    path.write_text("b1\n")
    assert drain(tail) == ["a3", "b1"]
    assert tail.rotations == 1
    tail.close()


def test_copy_truncate_takes_the_unread_lines_from_the_copy(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text("".join(f"line {i}\n" for i in range(10)))
    tail = FileTail(str(path), 1000, None, from_end=False)
    assert drain(tail)[-1] == "line 9"
    with path.open("a") as f:
        f.write("line 10\nline 11\n")
    shutil.copyfile(path, tmp_path / "app.log.1")
    with path.open("r+") as f:
        f.truncate(0)
    with path.open("a") as f:
        f.write("after 1\n")
    assert drain(tail) == ["line 10", "line 11", "after 1"]
    assert tail.truncations == 1
    tail.close()


def test_truncated_and_refilled_past_the_offset_between_two_polls_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text("short one\n")
    tail = FileTail(str(path), 1000, None, from_end=False)
    assert drain(tail) == ["short one"]
    path.write_text("a different and much longer first line\n")  # truncates, then writes past the offset
    assert drain(tail) == ["a different and much longer first line"]
    tail.close()


def test_restart_resumes_at_the_saved_offset(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text("one\ntwo\nhalf")
    tail = FileTail(str(path), 1000, None, from_end=False)
    assert drain(tail) == ["one", "two"]
    saved = TailState.list_from_state(tail.state())
    tail.close()
    with path.open("a") as f:
        f.write(" done\nthree\n")
    again = FileTail(str(path), 1000, saved, from_end=True)  # a saved state wins over from_end
    assert drain(again) == ["half done", "three"]
    again.close()


@pytest.mark.parametrize(("name", "rotated"), [
    ("app.log", "app.log-20261127"),  # logrotate's dateext
    # kube-apiserver's audit log (lumberjack): audit.log is renamed to audit-<time>.log
    ("audit.log", "audit-2026-11-27T10-00-00.000.log"),
])
def test_rotated_while_down_the_rest_of_the_old_file_is_read_first(tmp_path: Path, name: str, rotated: str) -> None:
    path = tmp_path / name
    path.write_text("one\n")
    tail = FileTail(str(path), 1000, None, from_end=False)
    assert drain(tail) == ["one"]
    saved = TailState.list_from_state(tail.state())
    tail.close()
    with path.open("a") as f:
        f.write("two\n")
    os.rename(path, tmp_path / rotated)
    path.write_text("three\n")
    again = FileTail(str(path), 1000, saved, from_end=False)
    assert drain(again) == ["two", "three"]
    again.close()


def test_a_file_deleted_while_read_is_finished_and_its_successor_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text("one\n")
    tail = FileTail(str(path), 1000, None, from_end=False)
    assert drain(tail) == ["one"]
    with path.open("a") as f:
        f.write("last words")
    path.unlink()
    assert drain(tail) == ["last words"]
    assert tail.state() is None
    path.write_text("reborn\n")
    assert drain(tail) == ["reborn"]
    tail.close()


def test_a_missing_file_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "later.log"
    tail = FileTail(str(path), 1000, None, from_end=True)
    assert tail.poll() == [] and tail.state() is None
    path.write_text("hello\n")  # appeared after the start: read whole
    assert drain(tail) == ["hello"]
    tail.close()


def test_through_a_link_a_file_rotated_while_down_is_found_beside_its_target(tmp_path: Path) -> None:
    """kubelet: /var/log/containers/x.log -> /var/log/pods/.../0.log, rotated to 0.log.<time>."""
    pods = tmp_path / "pods"
    pods.mkdir()
    target = pods / "0.log"
    target.write_text("one\n")
    link = tmp_path / "x.log"
    os.symlink(target, link)
    tail = FileTail(str(link), 1000, None, from_end=False)
    assert drain(tail) == ["one"]
    saved = TailState.list_from_state(tail.state())
    tail.close()
    with target.open("a") as f:
        f.write("two\n")
    os.rename(target, pods / "0.log.20261127-080000")
    target.write_text("three\n")
    again = FileTail(str(link), 1000, saved, from_end=False)
    assert drain(again) == ["two", "three"]
    again.close()

