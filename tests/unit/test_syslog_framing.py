"""Syslog framing without sockets: RFC 6587 octet counting and newline framing, mixed, split, cut and garbage."""

from __future__ import annotations

import pytest

from vigil.agent.modules.logs.syslog_framing import (
    MAX_OCTET_COUNT,
    Message,
    StreamFramer,
    datagram_message,
)

RFC5424 = b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - 'su root' failed for lonvick"
RFC3164 = b"<13>Feb  5 17:32:18 10.0.0.99 sshd[42]: Failed password for root from 203.0.113.9 port 5 ssh2"


def counted(message: bytes) -> bytes:
    return b"%d %s" % (len(message), message)


def frame(chunks: list[bytes], limit: int = 1024) -> list[bytes]:
    """Every message of a stream fed in these chunks, then closed."""
    framer = StreamFramer(limit)
    out = [m.data for chunk in chunks for m in framer.feed(chunk)]
    rest = framer.flush()
    return [*out, rest.data] if rest else out


def byte_by_byte(stream: bytes) -> list[bytes]:
    return [stream[i:i + 1] for i in range(len(stream))]


def test_octet_counted_messages() -> None:
    stream = counted(RFC5424) + counted(RFC3164)
    assert frame([stream]) == [RFC5424, RFC3164]


def test_octet_count_keeps_newlines_and_nul_inside_the_message() -> None:
    message = b"<13>1 - host app - - - first\nsecond\x00third"
    assert frame([counted(message) + counted(b"<13>next")]) == [message, b"<13>next"]


def test_newline_framing() -> None:
    assert frame([RFC3164 + b"\n" + RFC5424 + b"\n"]) == [RFC3164, RFC5424]


def test_crlf_and_nul_terminators() -> None:
    assert frame([b"<13>a\r\n<13>b\x00<13>c\n"]) == [b"<13>a", b"<13>b", b"<13>c"]


def test_a_cr_inside_a_line_stays() -> None:
    assert frame([b"<13>a\rb\n"]) == [b"<13>a\rb"]


def test_modes_are_chosen_per_message_as_rsyslog_does() -> None:
    stream = counted(RFC5424) + RFC3164 + b"\n" + counted(b"<13>x y") + b"<13>tail\n"
    assert frame([stream]) == [RFC5424, RFC3164, b"<13>x y", b"<13>tail"]


@pytest.mark.parametrize("split", [1, 2, 3, 5, 7, 64])
def test_messages_split_across_reads(split: int) -> None:
    stream = counted(RFC5424) + RFC3164 + b"\r\n" + counted(RFC3164) + b"<13>last\n"
    chunks = [stream[i:i + split] for i in range(0, len(stream), split)]
    assert frame(chunks) == [RFC5424, RFC3164, RFC3164, b"<13>last"]


def test_every_split_point_of_a_count() -> None:
    stream = counted(b"<13>one") + counted(b"<13>two")
    for cut in range(len(stream) + 1):
        assert frame([stream[:cut], stream[cut:]]) == [b"<13>one", b"<13>two"], cut


def test_empty_lines_give_nothing() -> None:
    assert frame([b"\n\n\r\n\x00<13>a\n\n", b"\r\n"]) == [b"<13>a"]
    assert frame([b""]) == []


def test_trailing_newline_after_a_counted_message_is_tolerated() -> None:
    assert frame([counted(b"<13>a") + b"\n" + counted(b"<13>b") + b"\r\n"]) == [b"<13>a", b"<13>b"]


def test_lines_starting_with_digits_are_lines() -> None:
    framer = StreamFramer(1024)
    assert [m.data for m in framer.feed(b"2026-11-27 12:00:00 app started\n12:00 ok\n42\n")] == [
        b"2026-11-27 12:00:00 app started", b"12:00 ok", b"42"]
    assert framer.framing_errors == 0


@pytest.mark.parametrize("count", [b"0", b"99999999999", b"12345678901234567890", str(MAX_OCTET_COUNT + 1).encode()])
def test_a_count_that_cannot_be_one_is_read_as_text(count: bytes) -> None:
    """A bogus count must not swallow the stream: the message goes through as a line, and is counted."""
    framer = StreamFramer(1024)
    messages = framer.feed(count + b" <13>hello\n<13>next\n")
    assert [m.data for m in messages] == [count + b" <13>hello", b"<13>next"]
    assert framer.framing_errors == 1


def test_a_count_with_endless_digits_holds_little() -> None:
    framer = StreamFramer(256)
    for _ in range(1000):
        framer.feed(b"9" * 1000)
        assert framer.pending <= 256
    message = framer.feed(b"\n")[0]
    assert message.size == 1_000_000 and len(message.data) == 256 and message.cut
    assert framer.framing_errors == 1


def test_long_line_is_cut_with_its_real_size_and_the_stream_goes_on() -> None:
    framer = StreamFramer(300)
    messages = []
    for _ in range(100):
        messages += framer.feed(b"x" * 100_000)
        assert framer.pending <= 300
    messages += framer.feed(b"\r\n<13>after\n")
    assert messages == [Message(b"x" * 300, 10_000_000), Message(b"<13>after", 9)]
    assert messages[0].cut and not messages[1].cut


def test_long_counted_message_is_cut_and_the_next_is_whole() -> None:
    framer = StreamFramer(300)
    body = b"<13>" + b"y" * 5_000_000
    stream = counted(body) + counted(b"<13>after")
    messages = []
    for i in range(0, len(stream), 65536):
        messages += framer.feed(stream[i:i + 65536])
        assert framer.pending <= 300
    assert messages == [Message(body[:300], len(body)), Message(b"<13>after", 9)]


def test_a_message_exactly_at_the_limit_is_not_cut() -> None:
    framer = StreamFramer(5)
    assert framer.feed(b"12345\n123456\r\n") == [Message(b"12345", 5), Message(b"12345", 6)]


def test_unfinished_message_at_the_end_of_the_stream_is_kept() -> None:
    assert frame([b"<13>a\n<13>no newline"]) == [b"<13>a", b"<13>no newline"]
    assert frame([b"<13>a\n" + b"50 <13>short"]) == [b"<13>a", b"<13>short"]
    assert frame([b"<13>a\n123"]) == [b"<13>a", b"123"]
    assert frame([b"<13>a\r"]) == [b"<13>a"]


def test_invalid_utf8_and_nul_pass_through_counted_framing() -> None:
    message = b"<13>bad \xff\xfe bytes \x00 here"
    assert frame(byte_by_byte(counted(message))) == [message]


def test_truncated_headers_pass_through_as_text() -> None:
    assert frame([b"<13>Jan  1 00:\n<1\n<>\n"]) == [b"<13>Jan  1 00:", b"<1", b"<>"]


def test_datagram_is_one_message_without_its_trailing_newline() -> None:
    assert datagram_message(RFC3164 + b"\n", 1024) == Message(RFC3164, len(RFC3164))
    assert datagram_message(RFC5424 + b"\r\n\x00", 1024) == Message(RFC5424, len(RFC5424))
    assert datagram_message(b"<13>a\nb\n", 1024) == Message(b"<13>a\nb", 7)
    assert datagram_message(b"\n", 1024) is None
    assert datagram_message(b"", 1024) is None


def test_long_datagram_is_cut_with_its_real_size() -> None:
    message = datagram_message(b"z" * 5000, 300)
    assert message == Message(b"z" * 300, 5000) and message.cut
