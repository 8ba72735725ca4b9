"""The EKS per-stream cursor: forward token first, time plus boundary digests when the token is refused."""

from __future__ import annotations

from typing import Any

import pytest

from vigil.agent.modules.cloud.eks import iam_arn
from vigil.agent.modules.cloud.eks_cursor import StreamCursor, event_digest, started_key, stream_key
from vigil.agent.modules.cloud.registry import cloud_modules
from vigil.config_kubernetes import KubernetesConfig
from vigil.event import AgentRef


def test_a_saved_cursor_comes_back_as_it_was() -> None:
    cursor = StreamCursor(token="f/00000000000000000000000000000000000000000000000000000042")
    cursor.advance(1_700_000_000_123, event_digest(1_700_000_000_123, "a"))
    cursor.advance(1_700_000_000_123, event_digest(1_700_000_000_123, "b"))
    again = StreamCursor.from_state(cursor.to_state())
    assert again == cursor
    assert again is not None and again.time_ms == 1_700_000_000_123


@pytest.mark.parametrize("state", [None, "garbage", 5, {"token": 7, "cursor": "x"}])
def test_nothing_usable_saved_means_a_new_stream_or_resume_by_time(state: Any) -> None:
    cursor = StreamCursor.from_state(state)
    if isinstance(state, dict):
        assert cursor == StreamCursor()  # no token, time 0: read from the start position
    else:
        assert cursor is None


def test_after_a_refused_token_only_events_not_seen_at_the_boundary_pass() -> None:
    cursor = StreamCursor(token="f/1")
    for ts, msg in ((1000, "early"), (2000, "a"), (2000, "b")):
        cursor.advance(ts, event_digest(ts, msg))
    cursor.stale_token()
    assert cursor.token is None and cursor.time_ms == 2000
    # Reading again from startTime=2000 returns a, b (already stored) and c (new, same millisecond).
    assert [m for m in ("a", "b", "c") if cursor.is_new(2000, event_digest(2000, m))] == ["c"]
    assert not cursor.is_new(1000, event_digest(1000, "late-but-older"))
    assert cursor.is_new(2001, event_digest(2001, "a"))


def test_the_boundary_digests_stay_bounded_to_one_millisecond() -> None:
    cursor = StreamCursor()
    for ts in range(1, 1000):
        cursor.advance(ts, event_digest(ts, "x"))
    assert len(cursor.to_state()["cursor"]["seen"]) == 1


def test_a_copy_moves_without_touching_the_committed_cursor() -> None:
    committed = StreamCursor(token="f/1")
    moved = committed.copy()
    moved.advance(5, event_digest(5, "m"))
    moved.token = "f/2"
    assert committed.to_state() == {"token": "f/1", "cursor": {"time_nano": 0, "seen": []}}
    assert moved.time_ms == 5


def test_digests_tell_messages_and_times_apart() -> None:
    assert event_digest(1, "a") != event_digest(1, "b") != event_digest(2, "b")
    assert event_digest(1, "\ud800 lone surrogate") == event_digest(1, "\ud800 lone surrogate")


def test_state_keys_name_the_cluster_and_the_stream() -> None:
    assert stream_key("prod", "kube-apiserver-audit-1") == "eks.prod.stream:kube-apiserver-audit-1"
    assert started_key("prod") == "eks.prod.started"


@pytest.mark.parametrize(("user", "arn"), [
    ({"extra": {"arn": ["arn:aws:iam::1:role/admin"], "canonicalArn": ["arn:aws:iam::1:role/x"]}},
     "arn:aws:iam::1:role/admin"),
    ({"extra": {"canonicalArn": ["arn:aws:iam::1:role/x"]}}, "arn:aws:iam::1:role/x"),
    ({"extra": {"arn": "arn:aws:iam::1:user/u"}}, "arn:aws:iam::1:user/u"),
    ({"username": "minikube-user"}, None),
    ("not a dict", None),
])
def test_the_iam_identity_comes_from_the_user_extra(user: Any, arn: str | None) -> None:
    assert iam_arn({"user": user}) == arn


def test_one_module_per_configured_cluster_and_none_without_configuration() -> None:
    def nothing(*_: Any) -> None:
        return None

    agent = AgentRef(id="000", name="manager")
    assert cloud_modules(KubernetesConfig(), agent, nothing, nothing) == []
    cfg = KubernetesConfig.model_validate({
        "eks": [{"cluster": "prod", "region": "eu-west-1"}, {"cluster": "dev", "region": "eu-west-1"}],
        "gke": [{"project": "p", "subscription": "projects/p/subscriptions/vigil-audit"}]})
    names = [m.name for m in cloud_modules(cfg, agent, nothing, nothing)]
    assert names == ["eks:prod", "eks:dev", "gke:vigil-audit"]
    eks = cloud_modules(cfg, agent, nothing, nothing)[0]
    assert eks.status()["log_group"] == "/aws/eks/prod/cluster"
