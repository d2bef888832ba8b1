"""The OpenAPI 3.1 document of the JSON API, served at ``<prefix>/api/openapi.json``.

Built per request from the mount prefix and the message bound in force, so the document
always describes the API that serves it. The test suite fuzzes the API against it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_STREAM_URL = {
    "type": "string",
    "description": (
        "the session's stream; its token query parameter opens it without a cookie for "
        "CHATAPP_STREAM_TOKEN_SECONDS (ask again for a fresh one)"
    ),
}

_ERRORS = {
    "400": "invalid request: a bad or unreadable body, a bad field or query parameter, or a bad Last-Event-ID",
    "401": "the host's owner callable found nobody signed in",
    "403": "cross_origin_refused: a state-changing request from a page of another origin",
    "404": "no such session (also another owner's session)",
    "408": "body_timeout: the request body stopped arriving",
    "409": "a reply is being generated, the chat is full, or the owner has too many chats",
    "413": "the message or the body is too large, or the chat (history_too_large) or the owner's chats (quota_exceeded) hold as many bytes as they may",
    "415": "the body is not application/json",
    "429": "rate limited or too many open streams; see Retry-After",
    "503": "the store is down (broker_unavailable) or full (broker_full, server_busy); see Retry-After",
}


def _errors(*statuses: str) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status in statuses:
        response = _json(_ref("Error"), _ERRORS[status])
        if status in ("429", "503"):
            response["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}}
        responses[status] = response
    return responses


#: The answer of a message post that asked for ``Accept: text/event-stream``.
_TURN_STREAM = {
    "description": (
        "with Accept: text/event-stream, the stream of the turn just started, as GET .../stream "
        "gives it (retry in the first event's block, then start, token..., error?, end); "
        "resume a dropped one with GET .../stream and Last-Event-ID"
    ),
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


def openapi_document(prefix: str, *, max_message_chars: int | None = None) -> dict[str, Any]:
    """The document for an API mounted at ``prefix`` ("" for the root)."""
    session_id = {
        "name": "session_id",
        "in": "path",
        "required": True,
        "description": "a session id as returned by POST /api/sessions (22 URL-safe characters)",
        "schema": {"type": "string"},
    }
    message = {"type": "string", "minLength": 1, "description": "the user's message; not blank"}
    if max_message_chars is not None:
        message["maxLength"] = max_message_chars
    api = prefix + "/api"
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "chatapp",
            "version": "1",
            "description": (
                "Stream LLM chat replies over Server-Sent Events. Every session belongs to "
                "an owner: by default an anonymous id in the signed session cookie, so keep "
                "cookies between calls. Errors are always "
                '{"error": {"code", "message"}}.'
            ),
        },
        "paths": {
            f"{api}/sessions": {
                "post": {
                    "operationId": "createSession",
                    "summary": "create a chat session owned by the caller",
                    "requestBody": {
                        "required": False,
                        "description": "{} (or no body at all), sent as application/json",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "responses": {
                        "201": {
                            **_json(_ref("SessionCreated"), "created"),
                            "headers": {"Location": {"description": "the session's URL", "schema": {"type": "string"}}},
                        },
                        **_errors("400", "401", "403", "408", "409", "413", "415", "429", "503"),
                    },
                }
            },
            f"{api}/sessions/{{session_id}}": {
                "parameters": [session_id],
                "get": {
                    "operationId": "getSession",
                    "summary": "a page of the session's history: the newest messages, and a cursor for older ones",
                    "parameters": [
                        {
                            "name": "before",
                            "in": "query",
                            "required": False,
                            "description": "a cursor from a page: the messages before it",
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "description": "the most messages to return, up to CHATAPP_HISTORY_PAGE_MESSAGES",
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {"200": _json(_ref("History"), "a page of the history"), **_errors("400", "401", "404", "429", "503")},
                },
                "delete": {
                    "operationId": "deleteSession",
                    "summary": "forget the session",
                    "responses": {"204": {"description": "deleted"}, **_errors("401", "403", "404", "408", "413", "503")},
                },
            },
            f"{api}/sessions/{{session_id}}/messages": {
                "parameters": [session_id],
                "post": {
                    "operationId": "postMessage",
                    "summary": "post a message; the reply is generated in the background",
                    "description": "With Accept: text/event-stream the answer is the reply's stream itself (200).",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("NewMessage")}},
                    },
                    "responses": {
                        "200": _TURN_STREAM,
                        "202": _json(_ref("MessagePosted"), "the reply is being generated"),
                        **_errors("400", "401", "403", "404", "408", "409", "413", "415", "429", "503"),
                    },
                },
            },
            f"{api}/chat": {
                "post": {
                    "operationId": "chat",
                    "summary": "post a message to the given session, or to a new one when none is given",
                    "description": (
                        "For one-shot clients. With Accept: text/event-stream the answer is the reply's "
                        "stream (200), whose start event carries session_id when the session is new."
                    ),
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("ChatMessage")}},
                    },
                    "responses": {
                        "200": _TURN_STREAM,
                        "202": _json(_ref("ChatStarted"), "the reply is being generated"),
                        **_errors("400", "401", "404", "409", "413", "415", "429"),
                    },
                },
            },
            f"{api}/sessions/{{session_id}}/stream": {
                "parameters": [session_id],
                "get": {
                    "operationId": "streamEvents",
                    "summary": "the EventSource stream of the latest turn",
                    "parameters": [
                        {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}},
                        {"name": "last_event_id", "in": "query", "required": False, "schema": {"type": "string"}},
                        {
                            "name": "token",
                            "in": "query",
                            "required": False,
                            "description": (
                                "the signed token of a stream_url: opens the stream without a cookie; "
                                "expired, tampered or another session's: 404"
                            ),
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "follow",
                            "in": "query",
                            "required": False,
                            "description": "1 keeps the stream open across turns",
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "events: start, token..., error?, end",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        "204": {"description": "nothing newer and nothing coming"},
                        **_errors("400", "401", "404", "429", "503"),
                    },
                },
            },
            f"{api}/sessions/{{session_id}}/cancel": {
                "parameters": [session_id],
                "post": {
                    "operationId": "cancelReply",
                    "summary": "stop the reply being generated",
                    "responses": {"202": _json(_ref("Cancelled"), "asked to stop"), **_errors("401", "403", "404", "408", "413", "503")},
                },
            },
            f"{prefix}/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "liveness and broker reachability",
                    "responses": {"200": _json(_ref("Health"), "ok"), "503": _json(_ref("Health"), "broker down")},
                }
            },
            f"{prefix}/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics of this app, in the text exposition format",
                    "responses": {
                        "200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
                        "401": _json(_ref("Error"), "CHATAPP_METRICS is a token, and Authorization: Bearer <token> did not carry it"),
                        "404": {"description": "metrics are turned off (CHATAPP_METRICS=off)"},
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string", "pattern": "^[a-z0-9_]+$"},
                                "message": {"type": "string", "minLength": 1},
                            },
                        }
                    },
                },
                "SessionCreated": {
                    "type": "object",
                    "required": ["session_id", "stream_url", "messages_url"],
                    "properties": {
                        "session_id": {"type": "string"},
                        "stream_url": _STREAM_URL,
                        "messages_url": {"type": "string"},
                    },
                },
                "Message": {
                    "type": "object",
                    "required": ["id", "role", "content"],
                    "properties": {
                        "id": {"type": "string"},
                        "role": {"enum": ["user", "assistant"]},
                        "content": {"type": "string"},
                    },
                },
                "History": {
                    "type": "object",
                    "required": ["session_id", "messages", "generating", "cursor", "stream_url"],
                    "properties": {
                        "session_id": {"type": "string"},
                        "messages": {"type": "array", "items": _ref("Message")},
                        "generating": {"type": "boolean"},
                        "cursor": {
                            "type": ["string", "null"],
                            "description": "older messages exist: ?before=<cursor> gets the page before this one",
                        },
                        "stream_url": _STREAM_URL,
                    },
                },
                "NewMessage": {
                    "type": "object",
                    "required": ["message"],
                    "properties": {"message": message},
                },
                "MessagePosted": {
                    "type": "object",
                    "required": ["message_id", "stream_url"],
                    "properties": {"message_id": {"type": "string"}, "stream_url": _STREAM_URL},
                },
                "ChatMessage": {
                    "type": "object",
                    "required": ["message"],
                    "properties": {
                        "message": message,
                        "session_id": {"type": "string", "description": "a session of the caller; left out, a new one"},
                    },
                },
                "ChatStarted": {
                    "type": "object",
                    "required": ["session_id", "message_id", "stream_url", "messages_url"],
                    "properties": {
                        "session_id": {"type": "string"},
                        "message_id": {"type": "string"},
                        "stream_url": _STREAM_URL,
                        "messages_url": {"type": "string"},
                    },
                },
                "Cancelled": {
                    "type": "object",
                    "required": ["cancelled"],
                    "properties": {"cancelled": {"type": "boolean"}},
                },
                "Health": {
                    "type": "object",
                    "required": ["status", "broker", "streams"],
                    "properties": {
                        "status": {"enum": ["ok", "unavailable"]},
                        "broker": {
                            "type": "object",
                            "required": ["backend", "ok"],
                            "properties": {"backend": {"type": "string"}, "ok": {"type": "boolean"}},
                        },
                        "streams": {"type": "integer", "minimum": 0},
                    },
                },
            }
        },
    }
