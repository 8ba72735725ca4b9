"""Container log lines: Docker json-file and CRI parsing, partial-line joining, who wrote them."""

from __future__ import annotations

import pytest

from vigil.agent.modules.logs.container_formats import (
    PartialJoiner,
    cri_identity,
    docker_identity,
    parse_cri,
    parse_docker_json,
)

CID = "3b5a8f2c" * 8


def test_docker_json_line() -> None:
    line = parse_docker_json(b'{"log":"GET / HTTP/1.1\\n","stream":"stdout","time":"2024-05-01T10:00:00.123456789Z"}')
    assert (line.message, line.stream, line.partial) == (b"GET / HTTP/1.1", "stdout", False)
    assert line.time == pytest.approx(1714557600.123456)


def test_docker_parts_are_joined_per_stream() -> None:
    joiner = PartialJoiner(limit=1000)
    parts = [b'{"log":"first half ","stream":"stdout","time":"2024-05-01T10:00:00Z"}',
             b'{"log":"an error\\n","stream":"stderr","time":"2024-05-01T10:00:00Z"}',
             b'{"log":"second half\\n","stream":"stdout","time":"2024-05-01T10:00:01Z"}']
    out = [joiner.add(parse_docker_json(p)) for p in parts]
    assert out == [None, (b"an error", 8), (b"first half second half", 22)]
    assert not joiner.pending


@pytest.mark.parametrize("bad", [b"not json", b"[1,2]", b'{"stream":"stdout"}', b'{"log": 5}', b"{"])
def test_bad_docker_lines_are_refused_with_a_reason(bad: bytes) -> None:
    with pytest.raises(ValueError, match="json-file"):
        parse_docker_json(bad)


def test_cri_partial_lines_are_joined_and_capped() -> None:
    joiner = PartialJoiner(limit=10)
    lines = [b"2016-10-06T00:17:09.669794202Z stdout P 0123456789",
             b"2016-10-06T00:17:09.669794202Z stdout P abcdef",
             b"2016-10-06T00:17:10.000000000Z stdout F end"]
    out = [joiner.add(parse_cri(x)) for x in lines]
    assert out == [None, None, (b"0123456789", 19)]  # kept to the limit, the whole length known


def test_cri_line_fields_and_an_empty_message() -> None:
    line = parse_cri(b"2016-10-06T00:17:09.669794202Z stderr F ")
    assert (line.message, line.stream, line.partial) == (b"", "stderr", False)
    with pytest.raises(ValueError, match="CRI"):
        parse_cri(b"2016-10-06T00:17:09Z stdout")


def test_unfinished_messages_are_flushed_as_they_are() -> None:
    joiner = PartialJoiner(limit=100)
    assert joiner.add(parse_cri(b"2016-10-06T00:17:09Z stdout P half")) is None
    assert joiner.flush() == [("stdout", b"half", 4)]


def test_cri_file_name_names_pod_namespace_and_container() -> None:
    meta = cri_identity(f"web-7d4b9c-x2x_shop_nginx-proxy-{CID}.log")
    assert meta == {"container": {"id": CID, "name": "nginx-proxy"},
                    "kubernetes": {"pod": "web-7d4b9c-x2x", "namespace": "shop", "container": "nginx-proxy"}}
    assert cri_identity("kube-proxy.log") is None


def test_docker_identity_from_the_engine_record() -> None:
    config = {"Name": "/web", "Config": {"Image": "nginx:1.27", "Labels": {
        "io.kubernetes.pod.name": "web-1", "io.kubernetes.pod.namespace": "shop",
        "io.kubernetes.container.name": "nginx"}}}
    assert docker_identity(CID, config) == {
        "container": {"id": CID, "name": "web", "image": "nginx:1.27"},
        "kubernetes": {"pod": "web-1", "namespace": "shop", "container": "nginx"}}
    assert docker_identity(CID, None) == {"container": {"id": CID}}
    assert docker_identity("not-an-id", config) is None
