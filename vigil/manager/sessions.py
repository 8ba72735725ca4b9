"""Who is connected right now, what each agent last said about itself, and commands waiting to go out.

A connection thread owns its socket; everyone else (the API, `vigil agents ...`) talks to an agent
by queueing a command on its session and waiting for the answer the thread hands back.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vigil.api.backend import CommandFailed

log = logging.getLogger(__name__)


@dataclass
class _Waiter:
    done: threading.Event = field(default_factory=threading.Event)
    answer: dict[str, Any] | None = None


@dataclass
class Session:
    agent_id: str
    name: str
    ip: str | None
    stream: str
    version: str | None = None
    os: str | None = None
    modules: list[str] = field(default_factory=list)
    connected_at: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)
    events_received: int = 0
    outbox_depth: int = 0
    dropped: int = 0
    outgoing: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    waiters: dict[str, _Waiter] = field(default_factory=dict)
    closing: threading.Event = field(default_factory=threading.Event)
    replaced: bool = False

    def update(self, message: dict[str, Any]) -> None:
        """Take what the agent reports about itself (hello, keepalive); ignore fields of the wrong type."""
        self.last_seen = time.time()
        for key in ("version", "os"):
            if isinstance(message.get(key), str):
                setattr(self, key, message[key][:200])
        modules = message.get("modules")
        if isinstance(modules, list):
            self.modules = [str(m)[:64] for m in modules[:50]]
        for key in ("outbox_depth", "dropped"):
            if isinstance(message.get(key), int):
                setattr(self, key, message[key])

    def resolve(self, message: dict[str, Any]) -> None:
        waiter = self.waiters.pop(str(message.get("id")), None)
        if waiter is None:
            log.warning("agent %s answered a command nobody waits for: %s", self.agent_id, message.get("id"))
            return
        waiter.answer = message
        waiter.done.set()

    def fail_waiters(self, reason: str) -> None:
        for waiter in list(self.waiters.values()):
            waiter.answer = {"ok": False, "error": reason}
            waiter.done.set()
        self.waiters.clear()


Listener = Callable[[str, Session, str], None]


class Sessions:
    """Thread-safe map of live sessions; `on_change(kind, session, reason)` hears connects and disconnects."""

    def __init__(self, on_change: Listener) -> None:
        self.on_change = on_change
        self._live: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def attach(self, session: Session) -> None:
        """The newest connection of an agent wins; an older one still open is told to close."""
        with self._lock:
            old = self._live.get(session.agent_id)
            self._live[session.agent_id] = session
        if old is not None:
            old.replaced = True
            old.closing.set()
            old.fail_waiters("the agent reconnected")
        self.on_change("connected", session, "replaced an older connection" if old else "")

    def detach(self, session: Session, reason: str) -> None:
        with self._lock:
            current = self._live.get(session.agent_id) is session
            if current:
                del self._live[session.agent_id]
        session.fail_waiters(f"the agent disconnected ({reason})")
        if current and not session.replaced:
            self.on_change("disconnected", session, reason)

    def get(self, agent_id: str) -> Session | None:
        with self._lock:
            return self._live.get(agent_id)

    def all(self) -> list[Session]:
        with self._lock:
            return list(self._live.values())

    def kick(self, agent_id: str) -> bool:
        session = self.get(agent_id)
        if session is not None:
            session.closing.set()
        return session is not None

    def command(self, agent_id: str, op: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send `op` to the agent and wait for its answer."""
        session = self.get(agent_id)
        if session is None:
            raise CommandFailed(f"agent {agent_id} is not connected")
        cid = f"c{next(self._ids)}"
        waiter = _Waiter()
        session.waiters[cid] = waiter
        log.info("command %s to agent %s (%s): %s %s", cid, agent_id, session.name, op, args)
        session.outgoing.put({"t": "cmd", "id": cid, "op": op, "args": args})
        if not waiter.done.wait(timeout):
            session.waiters.pop(cid, None)
            log.warning("command %s to agent %s: no answer within %.0f s", cid, agent_id, timeout)
            raise TimeoutError(f"agent {agent_id} did not answer within {timeout:.0f} s")
        answer = waiter.answer or {}
        if not answer.get("ok"):
            log.warning("command %s to agent %s failed: %s", cid, agent_id, answer.get("error"))
            raise CommandFailed(f"agent {agent_id}: {answer.get('error')}")
        log.info("command %s to agent %s done", cid, agent_id)
        result = answer.get("result")
        return result if isinstance(result, dict) else {"result": result}
