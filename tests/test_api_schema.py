"""schemathesis against the service's own OpenAPI schema: for generated requests to every
operation (valid and not), no 5xx, and every answer matches the documented schema and status."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from tests.helpers.service import KEY
from whyclip.ui.api import ServiceSettings, create_app
from whyclip.ui.api.dependencies import Resources

pytestmark = pytest.mark.usefixtures("database")  # each test on SQLite and on PostgreSQL

APP = create_app(ServiceSettings(), warm=False)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, headers={"X-API-Key": KEY})


@pytest.fixture(autouse=True)
def fresh_resources(home):
    """Each operation's examples run against a fresh store with library 'frogs' and the fake encoder."""
    APP.state.resources = Resources(ServiceSettings())
    _ = APP.state.resources.batcher  # the model loaded: /readyz is ready (503 before is by design)
    yield
    APP.state.resources.close()


CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_answers_match_the_schema(case):
    case.call_and_validate(checks=CHECKS)


@pytest.mark.slow  # schemathesis' full run: ten times the examples of the fast tier's
@schema.parametrize()
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_answers_match_the_schema_full_run(case):
    case.call_and_validate(checks=CHECKS)
