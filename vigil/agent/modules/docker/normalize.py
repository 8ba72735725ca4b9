"""Pure functions: raw Docker Engine events and inspect output -> Vigil events. No daemon needed."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from vigil.errors import EventError
from vigil.event import AgentRef, Event

LOCATION = "docker"
EXEC_PREFIXES = ("exec_create: ", "exec_start: ")
# Wrappers that run another program: name -> (options that take a value, positional words before
# the program). `timeout -s KILL 60 sh` runs sh; `nice -n 10 bash` runs bash; `busybox sh` runs sh.
_WRAPPERS: dict[str, tuple[frozenset[str], int]] = {
    "busybox": (frozenset(), 0),
    "env": (frozenset({"-u", "--unset", "-C", "--chdir", "-S", "--split-string"}), 0),
    "nice": (frozenset({"-n", "--adjustment"}), 0),
    "nohup": (frozenset(), 0),
    "timeout": (frozenset({"-s", "--signal", "-k", "--kill-after"}), 1),
    "stdbuf": (frozenset({"-i", "--input", "-o", "--output", "-e", "--error"}), 0),
    "setsid": (frozenset(), 0),
    "exec": (frozenset({"-a"}), 0),
    "chroot": (frozenset({"--userspec", "--groups"}), 1),
}


def parse_event(line: bytes, max_bytes: int) -> dict[str, Any]:
    """One line of the engine's event stream -> the event object, exactly as sent."""
    if len(line) > max_bytes:
        raise EventError(f"event of {len(line)} bytes is larger than the {max_bytes}-byte limit")
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise EventError(f"event is not valid JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise EventError(f"event must be a JSON object, got {type(obj).__name__}")
    if not isinstance(obj.get("Type"), str) or not isinstance(obj.get("Action"), str):
        raise EventError("event has no Type/Action strings")
    actor = obj.get("Actor")
    if actor is not None and not isinstance(actor, dict):
        raise EventError("event Actor must be an object")
    return obj


def event_time_nano(obj: dict[str, Any]) -> int:
    """The engine's nanosecond timestamp; older engines send only `time` in seconds."""
    nano = obj.get("timeNano")
    if type(nano) is int:
        return nano
    if isinstance(nano, int | float) and not isinstance(nano, bool):
        return int(nano)
    if isinstance(nano, str):
        try:
            return int(float(nano))
        except ValueError:
            pass
    seconds = obj.get("time")
    if isinstance(seconds, int | float) and not isinstance(seconds, bool):
        return int(seconds * 1_000_000_000)
    return 0


def event_digest(line: bytes) -> str:
    """Identity of one event for de-duplication when a stream is resumed."""
    return hashlib.blake2b(line, digest_size=12).hexdigest()


def attributes(obj: dict[str, Any]) -> dict[str, Any]:
    actor = obj.get("Actor") or {}
    attrs = actor.get("Attributes") if isinstance(actor, dict) else None
    return attrs if isinstance(attrs, dict) else {}


def actor_id(obj: dict[str, Any]) -> str:
    actor = obj.get("Actor") or {}
    value = actor.get("ID") if isinstance(actor, dict) else None
    return value if isinstance(value, str) else ""


def exec_info(action: str, healthcheck: str | None) -> dict[str, Any] | None:
    """Parse `exec_start: sh -c cat /etc/passwd` into the command, its program and a health-check flag.

    The engine joins the argv with spaces, so quoting is lost; the program is the first word,
    looked through wrappers such as `busybox` and `env`.
    """
    prefix = next((p for p in EXEC_PREFIXES if action.startswith(p)), None)
    if prefix is None:
        return None
    command = action[len(prefix):]
    words = command.split()
    program = program_of(words)
    info: dict[str, Any] = {
        "command": command.rstrip(),
        "program": program,
        "args": words[1:],
        "healthcheck": healthcheck is not None and command.rstrip() == healthcheck.rstrip(),
    }
    return info


def program_of(words: list[str]) -> str:
    """The program a command line runs, past wrappers such as env, nice, timeout or busybox (also used for
    `kubectl exec` commands in Kubernetes audit events)."""
    i = 0
    while i < len(words):
        name = words[i].rsplit("/", 1)[-1]
        wrapper = _WRAPPERS.get(name)
        if wrapper is None or i + 1 >= len(words):
            return name
        takes_value, positionals = wrapper
        i += 1
        while i < len(words) and (words[i].startswith("-") or (name == "env" and "=" in words[i])):
            i += 2 if words[i] in takes_value else 1
        i += positionals
    return words[-1].rsplit("/", 1)[-1] if words else ""


def healthcheck_command(inspect: dict[str, Any]) -> str | None:
    """The exec command line the engine will report for this container's HEALTHCHECK."""
    config = inspect.get("Config") or {}
    test = (config.get("Healthcheck") or {}).get("Test") or []
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD-SHELL" and len(test) > 1:
        return "/bin/sh -c " + " ".join(test[1:])
    if test[0] == "CMD":
        return " ".join(test[1:])
    return " ".join(test)


def posture(inspect: dict[str, Any]) -> dict[str, Any]:
    """What a container was started with that matters for security, from `docker inspect`."""
    host = inspect.get("HostConfig") or {}
    config = inspect.get("Config") or {}
    security_opt = [str(o) for o in host.get("SecurityOpt") or []]
    namespaces = [
        ns for ns, key in (("pid", "PidMode"), ("network", "NetworkMode"), ("ipc", "IpcMode"), ("uts", "UTSMode"))
        if str(host.get(key) or "") == "host"
    ]
    binds = []
    for mount in inspect.get("Mounts") or []:
        if isinstance(mount, dict) and mount.get("Type") == "bind" and mount.get("Source"):
            binds.append(str(mount["Source"]))
    for bind in host.get("Binds") or []:
        source = str(bind).split(":", 1)[0]
        if source.startswith("/") and source not in binds:
            binds.append(source)
    return {
        "id": inspect.get("Id"),
        "name": str(inspect.get("Name") or "").lstrip("/"),
        "image": config.get("Image"),
        "image_id": inspect.get("Image"),
        "user": config.get("User") or "",
        "privileged": bool(host.get("Privileged")),
        "host_namespaces": namespaces,
        "cap_add": sorted({str(c).upper().removeprefix("CAP_") for c in host.get("CapAdd") or []}),
        "bind_sources": [_clean_path(b) for b in binds],
        "readonly_rootfs": bool(host.get("ReadonlyRootfs")),
        "seccomp_unconfined": any(o.replace("=", ":", 1) == "seccomp:unconfined" for o in security_opt),
        "apparmor_unconfined": any(o.replace("=", ":", 1) == "apparmor:unconfined" for o in security_opt),
        "security_opt": security_opt,
        "healthcheck": healthcheck_command(inspect),
    }


def _clean_path(path: str) -> str:
    parts = [p for p in path.split("/") if p and p != "."]
    return "/" + "/".join(parts)


def image_name(obj: dict[str, Any]) -> str | None:
    """The tag an image event is about, when it names one (load/import name only the id)."""
    attrs = attributes(obj)
    if obj.get("Action") == "commit":
        ref = attrs.get("imageRef")
        return ref if isinstance(ref, str) and ref else None
    for candidate in (actor_id(obj), attrs.get("name")):
        if isinstance(candidate, str) and candidate and not candidate.startswith("sha256:"):
            if ":" not in candidate.rsplit("/", 1)[-1]:
                candidate += ":latest"
            return candidate
    return None


def build_event(obj: dict[str, Any], agent: AgentRef, enrichment: dict[str, Any]) -> Event:
    """The envelope: `data.docker` is the event exactly as the engine sent it."""
    data: dict[str, Any] = {"integration": "docker", "docker": obj, **enrichment}
    return Event(
        module="docker", location=LOCATION, timestamp=event_time_nano(obj) / 1e9, data=data,
        decoder="json", agent=agent,
    )


def error_event(agent: AgentRef, message: str, excerpt: bytes, when: float) -> Event:
    """A malformed event becomes an event of its own, so it is seen rather than dropped."""
    text = excerpt[:512].decode("utf-8", errors="replace")
    return Event(
        module="docker", location=LOCATION, timestamp=when, decoder="vigil", agent=agent,
        data={"vigil": {"module": "docker", "kind": "malformed_input", "error": message, "excerpt": text}},
        raw=text,
    )
