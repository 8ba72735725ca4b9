"""EKS audit logs from CloudWatch Logs: one module per cluster, polling its `kube-apiserver-audit-*` streams.

Each CloudWatch log event holds one audit.k8s.io Event as JSON. Every page read goes to the sink together
with the stream's cursor (forward token plus a time/digest fallback, `eks_cursor`), so a restart resumes
exactly where the stored events end. Lines CloudWatch cut (`[Truncated...]`) or that are not JSON become
health events; throttling and a missing log group slow the module down, they never stop it.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from vigil.agent.modules.base import BatchSink, StateReader
from vigil.agent.modules.cloud.eks_cursor import StreamCursor, event_digest, started_key, stream_key
from vigil.agent.modules.kubernetes.audit_normalize import audit_event, problem_event
from vigil.agent.modules.kubernetes.audit_payload import AuditPayloadError, parse_payload
from vigil.config_kubernetes import EksConfig
from vigil.event import AgentRef, Event

log = logging.getLogger(__name__)

TRUNCATED_SUFFIX = "[Truncated...]"
AUDIT_ID_RE = re.compile(r'"auditID":[ a-z0-9-"]+')  # as Falco's k8saudit-eks finds it in a cut line
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # CloudWatch's own limit is 1 MB; this only guards parse_payload
PAGE_EVENTS = 1000
EXCERPT_CHARS = 512

THROTTLING = frozenset({"ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded"})

ClientFactory = Callable[[], Any]


def boto3_client_factory(cfg: EksConfig) -> ClientFactory:
    """A CloudWatch Logs client with botocore's adaptive retries; boto3 is imported only when EKS is used."""

    def make() -> Any:
        import boto3
        from botocore.config import Config

        session = boto3.Session(profile_name=cfg.profile, region_name=cfg.region)
        return session.client("logs", endpoint_url=cfg.endpoint_url,
                               config=Config(retries={"mode": "adaptive", "max_attempts": 5}))

    return make


class EksModule:
    """Reads one cluster's audit log group; its events are `eks` audit events located at `group/stream`."""

    def __init__(self, cfg: EksConfig, agent: AgentRef, sink: BatchSink, read_state: StateReader, *,
                 client_factory: ClientFactory | None = None, backoff: tuple[float, float] = (1.0, 60.0)) -> None:
        self.cfg = cfg
        self.name = f"eks:{cfg.cluster}"
        self.agent = agent
        self.sink = sink
        self.read_state = read_state
        self.client_factory = client_factory or boto3_client_factory(cfg)
        self.log_group = cfg.log_group or f"/aws/eks/{cfg.cluster}/cluster"
        self.backoff_min, self.backoff_max = backoff
        self.cursors: dict[str, StreamCursor] = {}
        self.ingested: dict[str, int] = {}  # stream -> lastIngestionTime when it was last read to its end
        self.start_ms: int | None = None
        self.group_missing = False
        self.stop = threading.Event()
        self.counters = {"events": 0, "pages": 0, "truncated": 0, "malformed": 0, "throttled": 0,
                         "throttled_gave_up": 0, "stale_tokens": 0, "skipped_repeats": 0, "errors": 0, "streams": 0}

    def status(self) -> dict[str, Any]:
        return {"log_group": self.log_group, "group_missing": self.group_missing, **self.counters}

    def interrupt(self) -> None:
        self.stop.set()

    def run(self, stop: threading.Event) -> None:
        from botocore.exceptions import BotoCoreError

        self.stop = stop
        client = self.client_factory()
        # Counts every throttled attempt, botocore's own retries included (register_first: the retry
        # handler answers this event and would hide it from handlers registered after it).
        client.meta.events.register_first("needs-retry.logs", self._count_throttle)
        self.start_ms = self._start_ms()
        delay = self.backoff_min
        while not stop.is_set():
            try:
                self._poll(client)
                delay = self.backoff_min
                wait = self.cfg.poll_seconds
            except BotoCoreError as exc:  # no answer at all (network, credentials): retried like an error
                wait = self._client_error(type(exc).__name__, exc, delay)
                delay = min(self.backoff_max, delay * 2)
            except Exception as exc:  # botocore's ClientError carries the AWS error code
                code = _error_code(exc)
                if code is None:
                    raise
                wait = self._client_error(code, exc, delay)
                delay = min(self.backoff_max, delay * 2)
            stop.wait(wait)

    def _client_error(self, code: str, exc: Exception, delay: float) -> float:
        """How long to wait after an AWS error that is worth retrying; others are counted and logged."""
        if code in THROTTLING:
            self.counters["throttled_gave_up"] += 1
        elif code == "ResourceNotFoundException":
            if not self.group_missing:
                log.warning("%s: log group %s not found (is the cluster's audit logging on?); will retry",
                            self.name, self.log_group)
            self.group_missing = True
            return max(self.cfg.poll_seconds, delay)
        else:
            self.counters["errors"] += 1
            log.warning("%s: CloudWatch Logs error %s: %s; will retry", self.name, code, exc)
        return delay * random.uniform(0.5, 1.5)

    def _count_throttle(self, response: Any = None, **_: Any) -> None:
        """botocore's needs-retry hook: `response` is (http response, parsed body) or None."""
        parsed = response[1] if isinstance(response, tuple) and len(response) == 2 else None
        if isinstance(parsed, dict) and parsed.get("Error", {}).get("Code") in THROTTLING:
            self.counters["throttled"] += 1

    def _start_ms(self) -> int | None:
        """Where streams never read start: now at the very first run for `start_at: end` (kept in state)."""
        if self.cfg.start_at == "beginning":
            return None
        saved = self.read_state(started_key(self.cfg.cluster))
        if isinstance(saved, int):
            return saved
        now = int(time.time() * 1000)
        self.sink([], {started_key(self.cfg.cluster): now})
        return now

    def _poll(self, client: Any) -> None:
        paginator = client.get_paginator("describe_log_streams")
        pages = paginator.paginate(logGroupName=self.log_group, logStreamNamePrefix=self.cfg.stream_prefix)
        streams = [s for page in pages for s in page.get("logStreams", [])]
        self.group_missing = False
        self.counters["streams"] = len(streams)
        for stream in streams:
            if self.stop.is_set():
                return
            name = stream["logStreamName"]
            ingested = stream.get("lastIngestionTime")
            if ingested is not None and self.ingested.get(name) == ingested:
                continue  # nothing new since it was read to its end
            if self._read_stream(client, name) and ingested is not None:
                self.ingested[name] = int(ingested)

    def _cursor(self, stream: str) -> StreamCursor:
        if stream not in self.cursors:
            saved = StreamCursor.from_state(self.read_state(stream_key(self.cfg.cluster, stream)))
            if saved is None:
                saved = StreamCursor()
                if self.start_ms is not None:  # `start_at: end`: only what was logged since the first run
                    saved.advance(self.start_ms - 1, "")
            self.cursors[stream] = saved
        return self.cursors[stream]

    def _read_stream(self, client: Any, stream: str) -> bool:
        """Read one stream to its end, one sink commit per page; True when the end was reached."""
        cursor = self._cursor(stream)
        by_time = cursor.token is None
        while not self.stop.is_set():
            request: dict[str, Any] = {"logGroupName": self.log_group, "logStreamName": stream,
                                       "startFromHead": True, "limit": PAGE_EVENTS}
            if cursor.token is not None:
                request["nextToken"] = cursor.token
            elif cursor.time_ms:
                request["startTime"] = cursor.time_ms
            try:
                page = client.get_log_events(**request)
            except Exception as exc:
                if _error_code(exc) == "InvalidParameterException" and cursor.token is not None:
                    log.warning("%s: the saved position in %s was refused (%s); resuming from its last time",
                                self.name, stream, exc)
                    self.counters["stale_tokens"] += 1
                    cursor.stale_token()
                    by_time = True
                    continue
                raise
            self.counters["pages"] += 1
            token = page.get("nextForwardToken")
            moved = cursor.copy()
            events = self._events(stream, page.get("events", []), moved, by_time)
            moved.token = token
            if events or moved.to_state() != cursor.to_state():
                self.sink(events, {stream_key(self.cfg.cluster, stream): moved.to_state()})
            self.cursors[stream] = moved
            done = not token or token == cursor.token
            cursor = moved
            if done:
                return True
        return False

    def _events(self, stream: str, items: list[dict[str, Any]], cursor: StreamCursor, by_time: bool) -> list[Event]:
        """The Vigil events of one page, moving `cursor` past each log event (the bad ones too).

        In a read that began at a time (first read, or after a refused token) events older than the
        cursor, or seen at its exact time, are skipped: the events at the boundary come again, and the
        token handed out for such a read is not trusted to continue exactly where it ended. A read
        that began at a token takes every event, so one logged late with an older time is kept.
        """
        events: list[Event] = []
        for item in items:
            message = str(item.get("message", ""))
            timestamp = int(item.get("timestamp", 0))
            digest = event_digest(timestamp, message)
            if by_time and not cursor.is_new(timestamp, digest):
                self.counters["skipped_repeats"] += 1
                continue
            cursor.advance(timestamp, digest)
            events.append(self._event(stream, item, message, timestamp))
        return events

    def _event(self, stream: str, item: dict[str, Any], message: str, timestamp: int) -> Event:
        location = f"{self.log_group}/{stream}"
        if message.rstrip().endswith(TRUNCATED_SUFFIX):
            self.counters["truncated"] += 1
            return self._problem(location, "events_dropped", "audit event cut by CloudWatch Logs ([Truncated...])",
                                 stream, message, timestamp)
        try:
            batch = parse_payload(message.encode("utf-8", "replace"), max_events=1,
                                  max_event_bytes=MAX_MESSAGE_BYTES)
        except AuditPayloadError as exc:
            self.counters["malformed"] += 1
            return self._problem(location, "malformed_input", str(exc), stream, message, timestamp)
        if not batch.events:
            self.counters["malformed"] += 1
            reason = batch.dropped[0] if batch.dropped else "no audit event in the log line"
            return self._problem(location, "malformed_input", reason, stream, message, timestamp)
        obj = batch.events[0]
        self.counters["events"] += 1
        return audit_event(obj, module="eks", source="eks", cluster=self.cfg.cluster, location=location,
                           agent=self.agent, extra={"aws": self._aws(stream, item, obj)})

    def _aws(self, stream: str, item: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
        aws: dict[str, Any] = {"log_group": self.log_group, "log_stream": stream,
                               "event_id": str(item.get("eventId", "")),
                               "ingestion_time": item.get("ingestionTime")}
        if arn := iam_arn(obj):
            aws["iam_arn"] = arn
        return aws

    def _problem(self, location: str, kind: str, error: str, stream: str, message: str, timestamp: int) -> Event:
        details: dict[str, Any] = {"stream": stream, "timestamp": timestamp, "excerpt": message[:EXCERPT_CHARS],
                                   "size": len(message), "count": 1}
        if found := AUDIT_ID_RE.search(message):
            details["auditID"] = found.group(0).split(":", 1)[1].strip(' "')
        return problem_event("eks", location, kind, error, agent=self.agent, details=details)


def iam_arn(obj: dict[str, Any]) -> str | None:
    """The IAM identity EKS adds to the user (`user.extra.arn`, else `canonicalArn`)."""
    user = obj.get("user")
    extra = user.get("extra") if isinstance(user, dict) else None
    if not isinstance(extra, dict):
        return None
    for key in ("arn", "canonicalArn"):
        value = extra.get(key)
        if isinstance(value, list) and value:
            return str(value[0])
        if isinstance(value, str) and value:
            return value
    return None


def _error_code(exc: Exception) -> str | None:
    """The AWS error code of a botocore ClientError, None for anything else."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code else None
