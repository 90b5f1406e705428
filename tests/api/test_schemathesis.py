"""Property-based conformance: schemathesis against our own OpenAPI (ASGI, in process).

No 5xx, every response matches its documented status, content type and schema. Runs with
an admin credential and with a requester credential so both sides of the role checks are
exercised. ``pip install schemathesis`` (test extra).
"""

from __future__ import annotations

import os

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import checks  # noqa: E402

from custody import policy as pol  # noqa: E402
from custody.cluster import TREASURY  # noqa: E402
from tests.api.conftest import make_api, treasury  # noqa: E402

MAX_EXAMPLES = 8 if os.environ.get("CUSTODY_SLOW_SHORT") else 25


@pytest.fixture(scope="module")
def api_module(tmp_path_factory):  # noqa: ANN001, ANN201
    gen = make_api(tmp_path_factory.mktemp("st"), raw=True, sync_wait=0.5)
    api = next(gen)
    api.add_key("ed25519")
    yield api
    gen.close()


@pytest.mark.parametrize("role", ["admin", "requester"])
def test_openapi_conformance(api_module, role: str) -> None:  # noqa: ANN001
    schema = schemathesis.openapi.from_asgi("/openapi.json", api_module.app)
    failures: list[str] = []
    headers = {"Authorization": f"Bearer {api_module.tokens[role]}"}
    wanted = [
        checks.not_a_server_error,
        checks.status_code_conformance,
        checks.content_type_conformance,
        checks.response_schema_conformance,
    ]

    for op_result in schema.get_all_operations():
        op = op_result.ok()
        if op.method.upper() == "PUT":  # enrolment dials arbitrary URLs: covered elsewhere
            continue

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy())
        def run(case) -> None:  # noqa: ANN001
            resp = case.call(headers=headers)
            try:
                case.validate_response(resp, checks=wanted)
            except Exception as e:  # collect, report all at the end
                failures.append(f"{case.method} {case.path}: {str(e)[:400]}")

        run()
    assert not failures, "\n".join(failures[:10])


@pytest.fixture(scope="module")
def parking_api(tmp_path_factory):  # noqa: ANN001, ANN201
    """A coordinator without nodes whose policy sends every request to the treasury's
    approvers: a sign request is created and parked (202), never attempted (an attempt
    without nodes would answer 502, which the no-5xx check would count)."""
    two = pol.Requirement("all", (pol.GroupQuorum(TREASURY, 2),))
    policy = pol.Policy(
        rules=(pol.Rule("park-everything", "approve", approvals=two),),
        approver_groups=(pol.ApproverGroup(TREASURY, treasury()),),
    )
    gen = make_api(tmp_path_factory.mktemp("st-park"), policy=policy, sync_wait=0.5)
    api = next(gen)
    yield api
    gen.close()


def test_openapi_stateful_sign_request_links(parking_api) -> None:  # noqa: ANN001
    """Stateful: sign requests created through the API are followed by the OpenAPI links
    (createSignRequest -> getSignRequest, getSignRequestReceipt) with the ids the API
    answered; no 5xx, every answer as documented. The body's key is the one that exists
    (random ids would only ever reach the 404 of an unknown key)."""
    api_module = parking_api
    schema = schemathesis.openapi.from_asgi("/openapi.json", api_module.app)
    links = schema.raw_schema["paths"]["/v1/sign-requests"]["post"]["responses"]["201"]["links"]
    assert {v["operationId"] for v in links.values()} == {"getSignRequest", "getSignRequestReceipt"}
    kid = api_module.add_key("bip340")
    headers = {"Authorization": f"Bearer {api_module.tokens['requester']}"}
    wanted = [
        checks.not_a_server_error,
        checks.status_code_conformance,
        checks.content_type_conformance,
        checks.response_schema_conformance,
    ]
    seen: list[tuple[str, str, int, str]] = []

    ops = ["createSignRequest", "getSignRequest", "getSignRequestReceipt", "listSignRequests"]
    signing = schema.include(operation_id=ops)

    class Machine(signing.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case) -> None:  # noqa: ANN001
            case.headers = {**(case.headers or {}), **headers}
            if isinstance(case.body, dict) and "key_id" in case.body:
                case.body["key_id"] = kid

        def after_call(self, response, case) -> None:  # noqa: ANN001
            kind = ""
            if response.status_code >= 400:
                try:
                    kind = str(response.json().get("type", "")).rsplit(":", 1)[-1]
                except ValueError:
                    kind = "non-json"
            seen.append(
                (case.operation.method.upper(), case.operation.path, response.status_code, kind)
            )

        def validate_response(self, response, case, **kwargs) -> None:  # noqa: ANN001, ANN003
            case.validate_response(response, checks=wanted)

    Machine.run(
        settings=settings(
            max_examples=MAX_EXAMPLES,
            stateful_step_count=4,
            deadline=None,
            derandomize=True,  # the same steps every run: the link check is not left to luck
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    # a link followed with an id the API answered reaches the request (200) or its receipt,
    # which a parked request does not have yet (404 no-receipt); a random id is not-found
    followed = {
        (p, s, k)
        for _, p, s, k in seen
        if (p, s) == ("/v1/sign-requests/{request_id}", 200) or k == "no-receipt"
    }
    assert followed, f"no link followed to a created sign request: {seen[:20]}"
