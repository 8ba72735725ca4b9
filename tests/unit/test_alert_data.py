"""Audit alerts carry the event as the API server sent it: its JSON text, written as it came."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson

from vigil.agent.modules.kubernetes.audit_normalize import audit_event
from vigil.agent.modules.kubernetes.audit_payload import as_sent, parse_item, split_payload
from vigil.alert import encode_alert
from vigil.manager.analysis.folding import Folder
from vigil.manager.outputs.alerts_file import AlertsFile
from vigil.manager.outputs.store import Store
from vigil.manager.pipeline import DEFAULT_FOLD_IGNORE, Pipeline

from .support import analyzer

# A privileged pod created by an administrator (rule 200511), spaced and ordered as no encoder would.
SENT = (b'{"stage": "ResponseComplete",  "kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"%s",'
        b'"verb":"create","user":{"username":"kubernetes-admin"},"requestURI":"/api/v1/namespaces/default/pods",'
        b'"objectRef":{"resource":"pods","namespace":"default","name":"p","apiVersion":"v1"},'
        b'"responseStatus":{"code":201},"stageTimestamp":"2026-11-27T10:00:00.000000Z",'
        b'"requestObject":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p"},'
        b'"spec":{"containers":[{"name":"c","image":"nginx","securityContext":{"privileged":true}}]}},'
        b'"future field":{"\\u00e9":[1, 2.5e3, null]}}')


def events(*ids: str) -> list[Any]:
    body = b"[" + b",".join(SENT % i.encode() for i in ids) + b"]"
    out = []
    for index, item in enumerate(split_payload(body, max_events=10)):
        obj = parse_item(item, index, 1 << 20)
        assert isinstance(obj, dict)
        out.append(audit_event(obj, module="kubernetes", source="webhook", cluster="c", location="hook",
                               sent=as_sent(item)))
    return out


def test_the_alert_holds_the_bytes_sent_and_reads_as_the_event() -> None:
    event = events("a1")[0]
    alert = analyzer().analyse(event).alert
    assert alert is not None and alert["rule"]["id"] == "200511"
    line = encode_alert(alert)
    assert SENT % b"a1" in line  # written as it came, spacing and all
    assert b"\n" not in line
    assert orjson.loads(line)["data"]["k8s"] == orjson.loads(SENT % b"a1") == alert["data"]["k8s"]
    assert orjson.loads(line) == orjson.loads(orjson.dumps(alert))  # readers of the dict see the same alert


def test_a_copy_and_a_folded_summary_still_read_and_encode(tmp_path: Path) -> None:
    first, second = events("a1", "a2")
    store = Store(tmp_path / "alerts.db")
    alerts = AlertsFile(tmp_path / "alerts.json")
    pipeline = Pipeline(analyzer(), Folder(60, DEFAULT_FOLD_IGNORE), store, alerts, clock=lambda: 1000.0)
    assert len(pipeline.process(first)) == 1
    assert pipeline.process(second) == []  # the same alert but for auditID: folded
    summary = pipeline.drain()[0]
    assert summary["rule"]["firedtimes"] == 2 and summary["vigil"]["fold"]["occurrences"] == 2
    assert copy.deepcopy(summary) == summary
    lines = (tmp_path / "alerts.json").read_bytes().splitlines()
    assert [orjson.loads(x)["data"]["k8s"]["auditID"] for x in lines] == ["a1", "a1"]
    assert SENT % b"a1" in lines[0]


def test_an_event_sent_over_lines_is_encoded_from_its_objects() -> None:
    pretty = orjson.dumps([orjson.loads(SENT % b"a1")], option=orjson.OPT_INDENT_2)
    item = split_payload(pretty, max_events=10)[0]
    obj = parse_item(item, 0, 1 << 20)
    assert isinstance(obj, dict) and as_sent(item) is None
    event = audit_event(obj, module="kubernetes", source="webhook", cluster="c", location="hook", sent=None)
    alert = analyzer().analyse(event).alert
    assert alert is not None
    line = encode_alert(alert)
    assert b"\n" not in line and orjson.loads(line)["data"]["k8s"] == obj
