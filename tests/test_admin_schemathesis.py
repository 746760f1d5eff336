"""schemathesis against /admin/openapi.json: generated requests find no 5xx and no off-schema response."""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from admin_openapi import OPENAPI
from tests.admin_client import ADMIN_TOKEN, AdminServer

schema = schemathesis.openapi.from_dict(OPENAPI)
EXAMPLES_PER_OPERATION = 30


@pytest.fixture
def admin(database_url):
    server = AdminServer(database_url)
    server.request("POST", "/admin/schedules/hourly-matching/trigger")  # some runs and logs to read
    yield server
    server.close()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_conforms_to_its_openapi_description(case, admin):
    case.call_and_validate(base_url=admin.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
