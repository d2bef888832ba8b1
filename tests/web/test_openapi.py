"""The OpenAPI document, and a property-based fuzz of the API against it.

The fuzz runs schemathesis (hypothesis underneath) against a real gunicorn+gevent
server: generated and mutated paths, query strings, headers and bodies for every
operation, checking that none gets a 5xx, that every status and content type is one the
document declares, and that every JSON answer matches its schema. Examples are bounded
so the whole fuzz stays within about a minute; a request that takes longer than its
timeout fails the run, so a hang cannot pass.
"""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from chatapp import ChatApp, create_app
from chatapp.web.openapi import openapi_document
from tests.support.servers import ChatServer, ServerFactory

#: Examples per operation and mode; the whole fuzz stays well under a minute.
MAX_EXAMPLES = 100
FUZZ_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_document_is_served_and_describes_every_api_route() -> None:
    app = create_app({"TESTING": True, "CHATAPP_MAX_MESSAGE_CHARS": 500})
    response = app.test_client().get("/api/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    document = response.get_json()
    assert document["openapi"].startswith("3.1")
    documented = {(path, method.upper()) for path, item in document["paths"].items() for method in item if method != "parameters"}
    routes = {
        (str(rule).replace("<session_id>", "{session_id}"), method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("chatapp.") and rule.endpoint not in ("chatapp.api_fallback", "chatapp.static", "chatapp.page", "chatapp.openapi")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert documented == routes
    assert document["components"]["schemas"]["NewMessage"]["properties"]["message"]["maxLength"] == 500


def test_document_describes_the_one_step_stream_and_stream_tokens() -> None:
    paths = openapi_document("")["paths"]
    for path in ("/api/sessions/{session_id}/messages", "/api/chat"):
        responses = paths[path]["post"]["responses"]
        assert set(responses["200"]["content"]) == {"text/event-stream"}
        assert set(responses["202"]["content"]) == {"application/json"}
    assert "token" in [p["name"] for p in paths["/api/sessions/{session_id}/stream"]["get"]["parameters"]]
    schemas = openapi_document("")["components"]["schemas"]
    assert "session_id" in schemas["ChatMessage"]["properties"]
    assert "stream_url" in schemas["History"]["required"]


def test_document_follows_the_mount_prefix() -> None:
    from flask import Flask

    app = Flask("host")
    app.config.update(TESTING=True, SECRET_KEY="host secret")
    ChatApp(app, url_prefix="/assistant")
    document = app.test_client().get("/assistant/api/openapi.json").get_json()
    assert "/assistant/api/sessions/{session_id}/messages" in document["paths"]
    assert "/assistant/healthz" in document["paths"]


@pytest.fixture(scope="module")
def fuzz_server(start_server: ServerFactory) -> ChatServer:
    return start_server(
        {
            "CHATAPP_DEMO_DELAY_MS": "0",
            "CHATAPP_DEMO_REPLY_WORDS": "5",
            "CHATAPP_MAX_MESSAGE_CHARS": "200",
            # The fuzz is one owner per request (no cookie jar) or a few; limits would
            # only turn its requests into 429s.
            "CHATAPP_RATE_LIMIT": "100000/minute",
            "CHATAPP_MAX_SESSIONS_PER_OWNER": "100000",
        }
    )


@pytest.fixture(scope="module")
def api_schema(fuzz_server: ChatServer) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(fuzz_server.base_url + "/api/openapi.json", timeout=10)


def fuzz_targets() -> list:
    """(path, method, mode) for every operation; invalid inputs where the document can say so."""
    targets = []
    for path, item in openapi_document("")["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            modes = [GenerationMode.POSITIVE]
            # Path, query and header parameters are free-form strings, so only a body
            # has values that break the document.
            if "requestBody" in operation:
                modes.append(GenerationMode.NEGATIVE)
            for mode in modes:
                label = f"{method.upper()} {path} {'valid' if mode is GenerationMode.POSITIVE else 'invalid'}"
                targets.append(pytest.param(path, method.upper(), mode, id=label))
    return targets


@pytest.mark.parametrize(("path", "method", "mode"), fuzz_targets())
def test_fuzz_finds_no_server_error_and_no_hang(api_schema: schemathesis.BaseSchema, path: str, method: str, mode: GenerationMode) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=FUZZ_CHECKS, timeout=10)

    fuzz()


#: The operations on one session, fuzzed once more against a session that exists.
SESSION_OPERATIONS = [
    (path, method, mode)
    for path, method, mode in (param.values for param in fuzz_targets())
    if "{session_id}" in path and method != "DELETE"
]


@pytest.mark.parametrize(("path", "method", "mode"), SESSION_OPERATIONS)
def test_fuzz_on_a_real_session_keeps_its_history_whole(
    fuzz_server: ChatServer, api_schema: schemathesis.BaseSchema, path: str, method: str, mode: GenerationMode
) -> None:
    owner = requests.Session()
    created = owner.post(fuzz_server.base_url + "/api/sessions", json={}, timeout=10)
    assert created.status_code == 201
    session_id = created.json()["session_id"]
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    def fuzz(case: schemathesis.Case) -> None:
        case.path_parameters = {"session_id": session_id}
        # ?follow=1 keeps a stream open by design, waiting for turns that never come.
        if case.query:
            case.query.pop("follow", None)
        case.call_and_validate(session=owner, checks=FUZZ_CHECKS, timeout=10)

    fuzz()
    history = owner.get(f"{fuzz_server.base_url}/api/sessions/{session_id}", timeout=10).json()
    roles = [m["role"] for m in history["messages"]]
    # Whatever was thrown at it, the history is whole turns: user, assistant, user, ...
    assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"] * (len(roles) % 2)
    assert all(m["content"] for m in history["messages"][::2])
