"""GKE audit logs from a Pub/Sub subscription that a Log Router sink feeds with Cloud Audit Log entries.

The module thread pulls synchronously, converts each entry (`gke_convert`) and acknowledges the messages
only after the sink returned, i.e. once their events are durable: a crash before that means Pub/Sub
delivers them again. The insertIds of the last committed batch are stored with it, so a redelivery of
that batch (a crash between commit and ack) is recognised and dropped. A message that is not a
Kubernetes audit entry becomes a health event and is acknowledged, so it cannot come back forever.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson

from vigil.agent.modules.base import BatchSink, StateReader
from vigil.agent.modules.cloud.gke_convert import NotAuditEntry, convert
from vigil.agent.modules.kubernetes.audit_normalize import audit_event, problem_event
from vigil.config_kubernetes import GkeConfig
from vigil.event import AgentRef, Event

log = logging.getLogger(__name__)

PULL_TIMEOUT_S = 5.0  # how long one pull may wait for messages; bounds how long a stop takes
RECENT_IDS = 100_000  # insertIds remembered in memory to drop redeliveries during a run
EXCERPT_BYTES = 512

ClientFactory = Callable[[], Any]


def subscriber_factory(cfg: GkeConfig) -> ClientFactory:
    """A SubscriberClient; google-cloud-pubsub is imported only when GKE is used. PUBSUB_EMULATOR_HOST works."""

    def make() -> Any:
        from google.cloud import pubsub_v1

        if cfg.credentials_file is not None:
            return pubsub_v1.SubscriberClient.from_service_account_file(str(cfg.credentials_file))
        return pubsub_v1.SubscriberClient()

    return make


def state_key(subscription: str) -> str:
    return f"gke.{subscription}.last_batch"


class GkeModule:
    """Pulls one subscription; its events are `gke` audit events located at the entry's logName."""

    def __init__(self, cfg: GkeConfig, agent: AgentRef, sink: BatchSink, read_state: StateReader, *,
                 client_factory: ClientFactory | None = None, pull_timeout: float = PULL_TIMEOUT_S,
                 backoff: tuple[float, float] = (1.0, 60.0)) -> None:
        self.cfg = cfg
        if cfg.subscription.startswith("projects/"):
            self.path = cfg.subscription
        else:
            self.path = f"projects/{cfg.project}/subscriptions/{cfg.subscription}"
        self.short = self.path.rsplit("/", 1)[-1]
        self.name = f"gke:{self.short}"
        self.agent = agent
        self.sink = sink
        self.read_state = read_state
        self.client_factory = client_factory or subscriber_factory(cfg)
        self.pull_timeout = pull_timeout
        self.backoff_min, self.backoff_max = backoff
        self.recent: OrderedDict[str, None] = OrderedDict()
        self.counters = {"messages": 0, "events": 0, "malformed": 0, "truncated": 0, "redelivered": 0,
                         "acked": 0, "pull_errors": 0, "batches": 0}

    def status(self) -> dict[str, Any]:
        return {"subscription": self.path, **self.counters}

    def interrupt(self) -> None:
        """Nothing to close: a pull returns within `pull_timeout`."""

    def run(self, stop: threading.Event) -> None:
        from google.api_core import exceptions as gexc

        client = self.client_factory()
        saved = self.read_state(state_key(self.short))
        for insert_id in saved.get("insert_ids", []) if isinstance(saved, dict) else []:
            self._remember(str(insert_id))
        delay = self.backoff_min
        while not stop.is_set():
            try:
                response = client.pull(request={"subscription": self.path, "max_messages": self.cfg.max_messages},
                                       timeout=self.pull_timeout)
            except gexc.DeadlineExceeded:
                continue
            except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
                self.counters["pull_errors"] += 1
                log.warning("%s: pull failed (%s); will retry", self.name, exc)
                stop.wait(delay * random.uniform(0.5, 1.5))
                delay = min(self.backoff_max, delay * 2)
                continue
            delay = self.backoff_min
            if response.received_messages:
                self._handle(client, list(response.received_messages))

    def _handle(self, client: Any, received: list[Any]) -> None:
        """Store the batch, then ack it; if storing fails, hand the messages back at once and re-raise."""
        events: list[Event] = []
        batch_ids: list[str] = []
        for item in received:
            self.counters["messages"] += 1
            event, insert_id = self._event(item.message)
            if insert_id:
                if insert_id in self.recent or insert_id in batch_ids:
                    self.counters["redelivered"] += 1
                    continue
                batch_ids.append(insert_id)
            events.append(event)
        ack_ids = [item.ack_id for item in received]
        try:
            if events:
                self.sink(events, {state_key(self.short): {"insert_ids": batch_ids}})
                self.counters["batches"] += 1
        except BaseException:
            try:
                client.modify_ack_deadline(request={"subscription": self.path, "ack_ids": ack_ids,
                                                    "ack_deadline_seconds": 0})
            except Exception as exc:  # the ack deadline then returns them later
                log.warning("%s: could not hand messages back (%s)", self.name, exc)
            raise
        for insert_id in batch_ids:
            self._remember(insert_id)
        client.acknowledge(request={"subscription": self.path, "ack_ids": ack_ids})
        self.counters["acked"] += len(ack_ids)

    def _event(self, message: Any) -> tuple[Event, str]:
        """A message -> (its Vigil event, its insertId; "" for a health event)."""
        location = f"pubsub:{self.path}"
        data = bytes(message.data)
        try:
            audit, gcp = convert(orjson.loads(data))
        except orjson.JSONDecodeError as exc:
            return self._problem(location, f"Pub/Sub message is not JSON ({exc})", message, data), ""
        except NotAuditEntry as exc:
            return self._problem(location, str(exc), message, data), ""
        if gcp.get("truncated"):
            self.counters["truncated"] += 1
        self.counters["events"] += 1
        cluster = self.cfg.cluster or gcp.get("cluster") or "gke"
        event = audit_event(audit, module="gke", source="gke", cluster=cluster,
                            location=gcp.get("logName") or location, agent=self.agent, extra={"gcp": gcp})
        return event, str(gcp.get("insertId") or "")

    def _problem(self, location: str, error: str, message: Any, data: bytes) -> Event:
        self.counters["malformed"] += 1
        details = {"message_id": str(getattr(message, "message_id", "")),
                   "excerpt": data[:EXCERPT_BYTES].decode("utf-8", "replace"), "size": len(data)}
        return problem_event("gke", location, "malformed_input", error, agent=self.agent, details=details)

    def _remember(self, insert_id: str) -> None:
        self.recent[insert_id] = None
        self.recent.move_to_end(insert_id)
        while len(self.recent) > RECENT_IDS:
            self.recent.popitem(last=False)
