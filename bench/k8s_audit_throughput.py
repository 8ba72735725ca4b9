"""Kubernetes audit analysis throughput (issue 5): captured audit events through the webhook's path, one core.

    .venv/bin/python bench/k8s_audit_throughput.py [--events N] [--markdown]

The 51 captured audit events of Falco's test suite (../shared/fixtures/k8s-audit/falco-traces) plus the
webhook, log-file and EKS envelope shapes (envelope-shapes/), replayed until N events. Every replayed
event gets its own auditID, so de-duplication keeps them all, as it would for a real API server. They
are packed into `audit.k8s.io/v1 EventList` bodies of 400 events (the API server's default batch),
each serialised once, as the webhook receives them; then, in one thread, timed per chunk of 50,000
events:

    body -> split_payload -> for each item: parse_item -> AuditDedupe.is_new -> audit_event
         (with the item's JSON, as_sent) -> Analyzer.analyse -> encode_alert

Serialising the bodies is not timed (the API server does it). The target is judged on the median
chunk, as in bench/engine_throughput.py: a chunk is long enough to be stable, and the median ignores
the odd chunk slowed by another process. The garbage collector is set as the manager sets it
(vigil/gcpolicy.py). A second pass splits the time between parsing, normalizing
and analysing. Exits 1 when the median is below 20,000 events/s.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from vigil import compiled
from vigil.agent.modules.kubernetes.audit_normalize import audit_event
from vigil.agent.modules.kubernetes.audit_payload import AuditDedupe, as_sent, parse_item, parse_payload, split_payload
from vigil.alert import MitreCatalog, encode_alert
from vigil.event import AgentRef
from vigil.gcpolicy import settle_for_throughput
from vigil.manager.analysis.analyzer import Analyzer
from vigil.manager.analysis.engine import Engine
from vigil.manager.analysis.rule_loader import load_rules, shipped_rules_dir
from vigil.manager.analysis.ruleset import RuleSet

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.tables import markdown_table, measure_table

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared/fixtures/k8s-audit"
BATCH = 400  # kube-apiserver --audit-webhook-batch-max-size default
CHUNK_EVENTS = 50_000
WARMUP_EVENTS = 20_000
MAX_EVENTS = 10_000  # AuditWebhookConfig.max_events_per_request default
MAX_EVENT_BYTES = 1024 * 1024  # AuditWebhookConfig.max_event_bytes default
DEDUPE_ENTRIES = 100_000
MIN_ALERT_LEVEL = 3
TARGET_EVENTS_PER_SECOND = 20_000
AGENT = AgentRef("000", "bench-manager")
DEFAULT_GC_THRESHOLDS = gc.get_threshold()


def captured_events() -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """(audit event, extra data) for every captured event and envelope shape; fal_01_003 is refused."""
    out: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    for path in sorted((FIXTURES / "falco-traces").glob("*.json")):
        if path.name in ("manifest.json", "fal_01_003.json"):
            continue
        for line in path.read_bytes().splitlines():
            if line.strip():
                out += [(e, None) for e in parse_payload(line, max_events=MAX_EVENTS,
                                                         max_event_bytes=MAX_EVENT_BYTES).events]
    shapes = FIXTURES / "envelope-shapes"
    webhook = shapes / "webhook-eventlist-v1.json"
    if webhook.is_file():
        out += [(e, None) for e in parse_payload(webhook.read_bytes(), max_events=MAX_EVENTS,
                                                 max_event_bytes=MAX_EVENT_BYTES).events]
    backend = shapes / "log-backend-v1.jsonl"
    if backend.is_file():
        out += [(orjson.loads(line), None) for line in backend.read_bytes().splitlines() if line.strip()]
    eks = shapes / "eks-cloudwatch.json"
    if eks.is_file():
        item = orjson.loads(eks.read_bytes()).get("filterLogEvents_item") or {}
        if isinstance(item.get("message"), str):
            extra = {"aws": {"log_group": "/aws/eks/bench/cluster", "log_stream": item.get("logStreamName"),
                             "event_id": "0", "ingestion_time": item.get("timestamp")}}
            out.append((orjson.loads(item["message"]), extra))
    return out


def bodies(events: list[tuple[dict[str, Any], dict[str, Any] | None]], start: int,
           count: int) -> list[tuple[bytes, list[dict[str, Any] | None]]]:
    """`count` events from replay position `start`, as EventList bodies of BATCH, each with a new auditID."""
    replay = islice(cycle(events), start % len(events), start % len(events) + count)
    out: list[tuple[bytes, list[dict[str, Any] | None]]] = []
    items: list[dict[str, Any]] = []
    extras: list[dict[str, Any] | None] = []
    for n, (event, extra) in enumerate(replay, start):
        items.append({**event, "auditID": f"bench-{n:012d}"})
        extras.append(extra)
        if len(items) == BATCH:
            out.append((orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items}), extras))
            items, extras = [], []
    if items:
        out.append((orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items}), extras))
    return out


def build() -> Analyzer:
    """The analyzer as the manager builds it, on the shipped rules."""
    rules = load_rules([shipped_rules_dir()])
    return Analyzer(Engine(RuleSet(rules.rules)), MitreCatalog.shipped(), "bench", MIN_ALERT_LEVEL)


def run_chunk(analyzer: Analyzer, dedupe: AuditDedupe, chunk: list[tuple[bytes, list[dict[str, Any] | None]]],
              stage: str = "all") -> tuple[int, int, float]:
    """(events, alerts, seconds) for one chunk of bodies; `stage` stops early to split the time."""
    analyse = analyzer.analyse
    alerts = events = 0
    began = time.perf_counter()
    for body, extras in chunk:  # as the webhook does (AuditWebhookModule.accept), then analysed
        items = split_payload(body, max_events=MAX_EVENTS)
        events += len(items)
        for index, (item, extra) in enumerate(zip(items, extras, strict=True)):
            obj = parse_item(item, index, MAX_EVENT_BYTES)
            if stage == "parse":
                continue
            if isinstance(obj, str) or not dedupe.is_new(obj):
                continue
            event = audit_event(obj, module="kubernetes", source="webhook", cluster="bench", location="k8s-audit",
                                agent=AGENT, extra=extra, sent=as_sent(item))
            if stage == "normalize":
                continue
            alert = analyse(event).alert
            if alert is not None:
                encode_alert(alert)
                alerts += 1
    return events, alerts, time.perf_counter() - began


def measure(events: list[tuple[dict[str, Any], dict[str, Any] | None]], total: int,
            stage: str = "all") -> tuple[list[float], int, int, float]:
    """(events/s per chunk, events, alerts, seconds) after a warm-up, on a fresh analyzer."""
    analyzer = build()
    run_chunk(analyzer, AuditDedupe(DEDUPE_ENTRIES), bodies(events, 10**11, WARMUP_EVENTS), stage)
    analyzer = build()
    dedupe = AuditDedupe(DEDUPE_ENTRIES)
    gc.collect()
    settle_for_throughput()  # the manager's collector setting (vigil/gcpolicy.py)
    rates: list[float] = []
    done = alerts = 0
    seconds = 0.0
    while done < total:
        chunk = bodies(events, done, min(CHUNK_EVENTS, total - done))  # not timed: the API server's work
        count, found, took = run_chunk(analyzer, dedupe, chunk, stage)
        done += count
        alerts += found
        seconds += took
        rates.append(count / took)
    gc.unfreeze()
    gc.set_threshold(*DEFAULT_GC_THRESHOLDS)
    assert dedupe.duplicates == 0
    return rates, done, alerts, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    console = Console()
    if args.events < 1:
        parser.error("--events must be at least 1")
    if not (FIXTURES / "falco-traces").is_dir():
        console.print(f"[red]fixtures not found: {FIXTURES}[/red] (shared/fixtures/k8s-audit next to the project)")
        return 2
    events = captured_events()
    rates, done, alerts, seconds = measure(events, args.events)
    # A busy cluster's audit stream is mostly reads by the control plane, which match no alerting rule
    # and are logged at the Metadata level: the captured `get pods` of a kubelet without its response
    # body, nine times for each captured event.
    reads = [({k: v for k, v in e.items() if k not in ("requestObject", "responseObject")} | {"level": "Metadata"},
              x) for e, x in events if e.get("verb") == "get" and isinstance(e.get("objectRef"), dict)
             and e["objectRef"].get("resource") == "pods"]
    mixed = events + reads[:1] * (9 * len(events)) if reads else events
    mixed_rates, _, mixed_alerts, _ = measure(mixed, min(args.events, 200_000))
    split = min(args.events, 100_000)
    parse_rate = statistics.median(measure(events, split, "parse")[0])
    normalize_rate = statistics.median(measure(events, split, "normalize")[0])
    median = statistics.median(rates)
    per_event_us = 1e6 / median
    parse_us, upto_normalize_us = 1e6 / parse_rate, 1e6 / normalize_rate
    rows = [
        ["distinct captured events replayed", f"{len(events)}"],
        ["events (EventList bodies of 400)", f"{done:,}"],
        ["alerting events (level >= 3)", f"{alerts:,} ({alerts / done:.1%})"],
        [f"events/s, median {CHUNK_EVENTS:,}-event chunk", f"{median:,.0f}"],
        ["events/s, slowest / fastest chunk", f"{min(rates):,.0f} / {max(rates):,.0f}"],
        ["events/s overall", f"{done / seconds:,.0f}"],
        ["events/s, median chunk, 9 in 10 events a kubelet's `get pods` at Metadata level (no alert)",
         f"{statistics.median(mixed_rates):,.0f} ({mixed_alerts / min(args.events, 200_000):.1%} alerting)"],
        ["µs per event: split and parse / + dedupe and audit_event / + analyse and encode_alert",
         f"{parse_us:.1f} / {upto_normalize_us - parse_us:.1f} / {per_event_us - upto_normalize_us:.1f}"],
        ["hot path", compiled.STATUS.detail],
        [f"target >= {TARGET_EVENTS_PER_SECOND:,} events/s (median chunk)",
         "PASS" if median >= TARGET_EVENTS_PER_SECOND else "FAIL"],
    ]
    console.print(measure_table("Kubernetes audit analysis throughput, one core", rows))
    command = ".venv/bin/python bench/k8s_audit_throughput.py" + (
        f" --events {args.events}" if args.events != 1_000_000 else "")
    console.print(f"Command: {command}")
    console.print(f"nproc {os.cpu_count()}, Python {platform.python_version()}, {platform.platform()}; "
                  f"load average {os.getloadavg()[0]:.2f}", highlight=False)
    if args.markdown:
        print(markdown_table(["measure", "value"], rows))
    return 0 if median >= TARGET_EVENTS_PER_SECOND else 1


if __name__ == "__main__":
    sys.exit(main())
