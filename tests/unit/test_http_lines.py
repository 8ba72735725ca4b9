"""The HTTP log receiver's pure part: a body to lines, who sent them, and the events the manager sees."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from vigil.agent.modules.logs.http_lines_parsing import header_identity, line_events, line_identity, split_body
from vigil.agent.modules.logs.registry import log_modules
from vigil.config import LogsConfig
from vigil.config_kubernetes import HttpLogsConfig
from vigil.event import AgentRef

from .support import analyzer

AGENT = AgentRef("002", "node-a")
POD = {"pod": "shop-7d4b9c-x2x", "namespace": "shop", "container": "nginx"}
SQLI = ('198.51.100.7 - - [01/Mar/2026:10:00:00 +0000] "GET /item.php?id=1%20UNION%20SELECT%20user,password'
        '%20FROM%20users HTTP/1.1" 200 512 "-" "Mozilla/5.0"')


def events(body: bytes, content_type: str = "application/x-ndjson", limit: int = 1024,
           identity: dict[str, str] | None = None) -> list:
    return line_events(split_body(body, content_type), "http_logs:10.1.2.3", AGENT, limit, 1.0, identity or {})


def test_ndjson_body_splits_on_newlines_and_skips_blank_lines() -> None:
    assert split_body(b'{"a":1}\r\n\n  \ntext line\n{"b":2}', "application/x-ndjson") == [
        b'{"a":1}', b"text line", b'{"b":2}']


def test_a_json_body_may_be_one_object_or_an_array() -> None:
    assert split_body(b'{\n  "message": "x"\n}', "application/json") == [b'{"message":"x"}']
    assert split_body(b'[{"a":1}, "plain", 5]', "application/json") == [b'{"a":1}', b"plain", b"5"]
    # Not one JSON value: taken as lines, as ndjson.
    assert split_body(b'{"a":1}\n{"b":2}', "application/json") == [b'{"a":1}', b'{"b":2}']


def test_identity_from_headers_and_from_the_line_which_wins() -> None:
    headers = {"X-Vigil-Pod": "web-1", "X-Vigil-Namespace": "shop", "X-Vigil-Container": "nginx"}
    assert header_identity(headers) == {"pod": "web-1", "namespace": "shop", "container": "nginx"}
    assert header_identity({"X-Vigil-Pod": "  ", "X-Vigil-Namespace": "x" * 300}) == {}
    assert line_identity({"kubernetes": {"pod_name": "api-2", "namespace_name": "prod"}}) == {
        "pod": "api-2", "namespace": "prod"}
    assert line_identity({"kubernetes": "api-2"}) == {}
    line = orjson.dumps({"message": "hello", "kubernetes": {"pod": "api-2"}})
    [event] = events(line, identity={"pod": "web-1", "namespace": "shop"})
    assert event.data["kubernetes"] == {"pod": "api-2"}  # not mixed with another pod's namespace
    [plain] = events(b'{"message": "hello"}', identity={"pod": "web-1", "namespace": "shop"})
    assert plain.data["kubernetes"] == {"pod": "web-1", "namespace": "shop"}


def test_text_line_is_a_text_event_with_the_pod() -> None:
    [event] = events(SQLI.encode(), identity=POD)
    assert (event.decoder, event.raw, event.location) == ("syslog", SQLI, "http_logs:10.1.2.3")
    assert event.data == {"kubernetes": POD}


def test_json_line_keeps_its_object_and_its_message_is_the_text() -> None:
    obj = {"log": SQLI, "level": "info", "integration": "docker"}
    [event] = events(orjson.dumps(obj), identity=POD)
    assert event.decoder == "syslog" and event.raw == SQLI
    assert event.data["json"] == obj and "integration" not in event.data  # no posing as the Docker integration
    nested = {"log": '{"integration": "docker", "docker": {"Action": "exec_create"}}'}
    [inner] = events(orjson.dumps(nested), identity=POD)
    assert inner.decoder == "json" and inner.data == {"kubernetes": POD, "json": nested}
    assert analyzer().analyse(inner).alert is None
    [structured] = events(b'{"user": "bob", "action": "login"}')
    assert structured.decoder == "json" and structured.data == {"json": {"user": "bob", "action": "login"}}


def test_long_line_is_cut_and_marked_and_its_json_not_kept() -> None:
    long = orjson.dumps({"message": "A" * 5000})
    [event] = events(long, limit=256)
    assert event.decoder == "syslog" and "json" not in event.data
    assert event.data["log"] == {"truncated": True, "original_bytes": len(long)}
    assert event.raw is not None and event.raw.endswith(f"[vigil: line cut at 256 bytes of {len(long)}]")


def test_invalid_utf8_and_nul_bytes_are_replaced_and_marked() -> None:
    [event] = events(b"bad \xff\xfe bytes \x00 here")
    assert event.raw == "bad \ufffd\ufffd bytes \ufffd here"
    assert event.data["log"] == {"invalid_bytes": True}
    [garbage] = events(b"{not json \xc3")
    assert garbage.decoder == "syslog" and garbage.data["log"] == {"invalid_bytes": True}


def test_web_attack_in_a_posted_line_alerts_and_names_the_pod() -> None:
    fresh = analyzer()
    [event] = events(orjson.dumps({"log": SQLI, "stream": "stdout"}), identity=POD)
    alert = fresh.analyse(event).alert
    assert alert is not None and alert["rule"]["id"] == "31106"
    assert alert["data"]["kubernetes"] == POD


def test_the_module_is_built_only_when_enabled_and_even_with_the_collector_off() -> None:
    off = LogsConfig(enabled=False)
    assert log_modules(off, AGENT, lambda e, s: None, lambda k: None) == []
    assert log_modules(off, AGENT, lambda e, s: None, lambda k: None, HttpLogsConfig()) == []
    [module] = log_modules(off, AGENT, lambda e, s: None, lambda k: None, HttpLogsConfig(enabled=True))
    assert module.name == "http_logs"


def test_config_refuses_a_queue_smaller_than_one_request() -> None:
    with pytest.raises(ValidationError, match="queue_lines must be at least max_lines_per_request"):
        HttpLogsConfig(queue_lines=100, max_lines_per_request=1000)
    with pytest.raises(ValidationError, match="Extra inputs"):
        HttpLogsConfig.model_validate({"enabled": True, "bogus": 1})
