"""What events don't carry: container posture from inspect, exec details, and image tag history."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

import docker
import docker.errors

from vigil.agent.modules.docker import normalize

log = logging.getLogger(__name__)

MAX_CACHED_CONTAINERS = 10_000
POSTURE_ACTIONS = frozenset({"create", "start", "update"})
IMAGE_ACTIONS = frozenset({"pull", "tag", "load", "import"})


class Enricher:
    """Keeps a bounded cache of container posture and the tag -> image id map Vigil has seen."""

    def __init__(self, inspect: bool, images: dict[str, str] | None = None) -> None:
        self.inspect = inspect
        self.images: dict[str, str] = dict(images or {})
        self._posture: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.inspect_errors = 0

    def seed_images(self, client: docker.DockerClient) -> None:
        """Learn the tags present now, without overriding what was seen before a restart."""
        for image in client.api.images():
            for tag in image.get("RepoTags") or []:
                if tag and tag != "<none>:<none>":
                    self.images.setdefault(tag, image["Id"])

    def enrich(self, client: docker.DockerClient, obj: dict[str, Any]) -> dict[str, Any]:
        kind, action = obj.get("Type"), str(obj.get("Action"))
        extra: dict[str, Any] = {}
        if kind == "container":
            cid = normalize.actor_id(obj)
            if action in POSTURE_ACTIONS and self.inspect:
                extra["container"] = self._inspect_container(client, cid, refresh=True)
            elif action.startswith(normalize.EXEC_PREFIXES):
                posture = self._inspect_container(client, cid, refresh=False) if self.inspect else {}
                info = normalize.exec_info(action, posture.get("healthcheck"))
                if info is not None:
                    extra["exec"] = info
            elif action == "destroy":
                self._posture.pop(cid, None)
            if action == "commit":
                image = self._track_image(client, obj)
                if image:
                    extra["image"] = image
        elif kind == "image" and action in IMAGE_ACTIONS:
            image = self._track_image(client, obj)
            if image:
                extra["image"] = image
        return extra

    def _inspect_container(self, client: docker.DockerClient, cid: str, refresh: bool) -> dict[str, Any]:
        if not refresh and cid in self._posture:
            self._posture.move_to_end(cid)
            return self._posture[cid]
        try:
            posture = normalize.posture(client.api.inspect_container(cid))
        except docker.errors.DockerException as exc:
            self.inspect_errors += 1
            return {"inspect_error": _short(exc)}
        posture["inspected_at"] = time.time()
        self._posture[cid] = posture
        if len(self._posture) > MAX_CACHED_CONTAINERS:
            self._posture.popitem(last=False)
        return posture

    def _track_image(self, client: docker.DockerClient, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Note which image id each tag names now; report the tag whose id changed."""
        ref = normalize.image_name(obj)
        if obj.get("Type") == "container":
            target = normalize.attributes(obj).get("imageID") or ref
        else:
            target = normalize.actor_id(obj) or ref
        if not target:
            return None
        try:
            details = client.api.inspect_image(target)
        except docker.errors.DockerException as exc:
            self.inspect_errors += 1
            return {"name": ref, "inspect_error": _short(exc)}
        image_id = str(details.get("Id"))
        tags = [t for t in details.get("RepoTags") or [] if t and t != "<none>:<none>"]
        info: dict[str, Any] = {"name": ref or (tags[0] if tags else image_id), "id": image_id, "tags": tags}
        for tag in tags:
            previous = self.images.get(tag)
            if previous is not None and previous != image_id and "previous_id" not in info:
                info["name"], info["previous_id"] = tag, previous
            self.images[tag] = image_id
        return info


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
