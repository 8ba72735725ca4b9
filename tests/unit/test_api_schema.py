"""A bounded schemathesis run over the OpenAPI description: no 5xx, and every answer matches the description.

In-process on the ASGI app with an admin key and a store of real alerts; the examples are derived
deterministically (derandomize), so a failure here fails the same way on every run.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .api_support import bearer, make_app, real_alerts

# 11 operations x 18 examples: about 200 requests in all, well under a minute.
EXAMPLES_PER_OPERATION = 18
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]

# schemathesis parametrizes at collection, so the app exists at import (its fixture loader does not work
# with this pytest); the fixture below removes its data directory afterwards.
_DATA_DIR = Path(tempfile.mkdtemp(prefix="vigil-schemathesis-"))
_APP, _, _KEY = make_app(_DATA_DIR, real_alerts()[:120], max_page_size=50)
schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    _APP.state.ctx.auth.store.close()
    shutil.rmtree(_DATA_DIR, ignore_errors=True)


def test_the_description_covers_every_route() -> None:
    paths = set(_APP.openapi()["paths"])
    assert paths == {"/health", "/metrics", "/auth/login", "/agents", "/agents/{agent_id}",
                     "/agents/{agent_id}/commands", "/alerts", "/alerts/{alert_id}", "/rules", "/rules/{rule_id}"}


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_and_never_fails(case: schemathesis.Case) -> None:
    response = case.call(headers=bearer(_KEY))
    case.validate_response(response, checks=CHECKS)
