"""Metrics and request logs: ``/metrics`` through real servers, per-app registries,
prometheus_client's multiprocess mode under several workers, and JSON request lines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from flask import Flask
from flask.sessions import session_json_serializer
from itsdangerous import URLSafeTimedSerializer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from chatapp import ChatApp, ConfigError, create_app
from tests.support.apps.failing import TimingOutProvider
from tests.support.redis_server import RedisServer
from tests.support.servers import ChatServer, ServerFactory, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(base_url: str) -> Samples:
    response = httpx.get(base_url + "/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def server(start_server: ServerFactory) -> ChatServer:
    return start_server({"CHATAPP_DEMO_DELAY_MS": "5", "CHATAPP_DEMO_REPLY_WORDS": "10", "CHATAPP_HEARTBEAT_SECONDS": "0.2"})


def test_metrics_change_as_turns_run(server: ChatServer) -> None:
    before = scrape(server.base_url)
    for name in ("chatapp_turns_started_total", "chatapp_tokens_streamed_total", "chatapp_heartbeats_total", "chatapp_open_streams"):
        assert (name, ()) in before, name
    assert ("chatapp_turns_finished_total", (("finish_reason", "cancelled"),)) in before
    with server.client() as client:
        session_id = client.new_session()
        client.send_message(session_id, "count me")
        with client.open_stream(session_id) as stream:
            events = stream.until_end()
    tokens = sum(e.event == "token" for e in events)
    assert tokens == 10
    after = wait_for(lambda: (s := scrape(server.base_url)) and value(s, "chatapp_open_streams") == 0 and s)
    assert value(after, "chatapp_turns_started_total") == value(before, "chatapp_turns_started_total") + 1
    assert value(after, "chatapp_turns_finished_total", finish_reason="stop") == value(before, "chatapp_turns_finished_total", finish_reason="stop") + 1
    assert value(after, "chatapp_tokens_streamed_total") == value(before, "chatapp_tokens_streamed_total") + tokens
    for histogram in ("chatapp_time_to_first_token_seconds", "chatapp_turn_duration_seconds"):
        assert value(after, histogram + "_count") == value(before, histogram + "_count") + 1
        assert value(after, histogram + "_sum") > value(before, histogram + "_sum")


def test_open_streams_and_heartbeats_are_counted(server: ChatServer) -> None:
    assert wait_for(lambda: value(scrape(server.base_url), "chatapp_open_streams") == 0)
    before = scrape(server.base_url)
    with server.client() as client:
        session_id = client.new_session()
        with client.open_stream(session_id, params={"follow": "1"}) as stream:
            pings = 0
            for item in stream.items():
                pings += item.kind == "comment"
                if pings == 3:
                    break
            during = scrape(server.base_url)
            assert value(during, "chatapp_open_streams") == 1
    assert value(during, "chatapp_heartbeats_total") >= value(before, "chatapp_heartbeats_total") + 3
    assert wait_for(lambda: value(scrape(server.base_url), "chatapp_open_streams") == 0)


def test_cancel_is_counted_by_finish_reason(start_server: ServerFactory) -> None:
    slow = start_server({"CHATAPP_DEMO_DELAY_MS": "300", "CHATAPP_DEMO_REPLY_WORDS": "50"})
    with slow.client() as client:
        session_id = client.new_session()
        client.send_message(session_id, "long")
        with client.open_stream(session_id) as stream:
            for event in stream.events():
                if event.event == "token":
                    client.post(f"/api/sessions/{session_id}/cancel")
                if event.event == "end":
                    break
    samples = wait_for(lambda: (s := scrape(slow.base_url)) and value(s, "chatapp_turns_finished_total", finish_reason="cancelled") == 1 and s)
    assert value(samples, "chatapp_turns_finished_total", finish_reason="cancelled") == 1
    assert value(samples, "chatapp_turns_finished_total", finish_reason="stop") == 0


def finished(client, session_id: str) -> dict:
    return wait_for(lambda: (body := client.get(f"/api/sessions/{session_id}").get_json()) and not body["generating"] and body)


def test_upstream_errors_by_code_and_registries_per_app() -> None:
    first = Flask("first")
    first.config.update(TESTING=True, SECRET_KEY="host secret")
    ChatApp(first, provider=TimingOutProvider())
    second = create_app({"TESTING": True, "CHATAPP_DEMO_DELAY_MS": 0})
    client = first.test_client()
    session_id = client.post("/api/sessions", json={}).get_json()["session_id"]
    client.post(f"/api/sessions/{session_id}/messages", json={"message": "hi"})
    finished(client, session_id)
    samples = parse(client.get("/metrics").get_data(as_text=True))
    assert value(samples, "chatapp_upstream_errors_total", code="upstream_timeout") == 1
    assert value(samples, "chatapp_turns_finished_total", finish_reason="error") == 1
    assert value(samples, "chatapp_tokens_streamed_total") == 1
    # Another app in the same process keeps its own numbers.
    other = parse(second.test_client().get("/metrics").get_data(as_text=True))
    assert value(other, "chatapp_turns_started_total") == 0
    assert ("chatapp_upstream_errors_total", (("code", "upstream_timeout"),)) not in other


def test_cache_counters_record_through_the_app_state() -> None:
    app = create_app({"TESTING": True})
    metrics = app.extensions["chatapp"].metrics
    metrics.cache_hit()
    metrics.cache_miss()
    metrics.cache_miss()
    samples = parse(app.test_client().get("/metrics").get_data(as_text=True))
    assert value(samples, "chatapp_cache_hits_total") == 1
    assert value(samples, "chatapp_cache_misses_total") == 2


def test_metrics_can_be_switched_off_and_follow_the_prefix() -> None:
    off = create_app({"TESTING": True, "CHATAPP_METRICS": "off"}).test_client()
    assert off.get("/metrics").status_code == 404
    prefixed = create_app({"TESTING": True, "CHATAPP_URL_PREFIX": "/assistant"}).test_client()
    assert prefixed.get("/assistant/metrics").status_code == 200
    assert prefixed.get("/metrics").status_code == 404


def test_metrics_behind_a_token_ask_for_it() -> None:
    token = "s3cret-scrape-token-0123456789"
    client = create_app({"TESTING": True, "CHATAPP_METRICS": token}).test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}, {"Authorization": f"Basic {token}"}):
        refused = client.get("/metrics", headers=headers)
        assert refused.status_code == 401 and refused.mimetype == "application/json"
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert token not in refused.get_data(as_text=True)
    allowed = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert allowed.status_code == 200 and b"chatapp_" in allowed.data
    # A short token is refused at start-up: it would be guessed.
    with pytest.raises(ConfigError, match="CHATAPP_METRICS is invalid"):
        create_app({"TESTING": True, "CHATAPP_METRICS": "short"})


# -- several workers: prometheus_client's multiprocess mode -------------------------------


def per_worker(metrics_dir: Path, pid: int, tmp_path: Path) -> Samples:
    """One worker's own numbers: its files alone, collected like a scrape would."""
    own = tmp_path / f"worker-{pid}"
    own.mkdir(parents=True, exist_ok=True)
    for path in metrics_dir.glob(f"*_{pid}.db"):
        shutil.copy(path, own / path.name)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(own))
    return parse(generate_latest(registry).decode())


def test_multiprocess_mode_sums_every_worker(start_server: ServerFactory, redis_server: RedisServer, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    server = start_server(
        {
            "CHATAPP_REDIS_URL": redis_server.url,
            "CHATAPP_SECRET_KEY": "shared",
            "WEB_CONCURRENCY": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "CHATAPP_DEMO_DELAY_MS": "1",
            "CHATAPP_DEMO_REPLY_WORDS": "4",
        }
    )
    pids = server.worker_pids()
    assert len(pids) == 2
    turns = 0
    # New connections land on either worker; go on until both have run turns.
    while turns < 60:
        with server.client() as client:
            session_id = client.new_session()
            client.send_message(session_id, f"turn {turns}")
            with client.open_stream(session_id) as stream:
                stream.until_end()
        turns += 1
        if turns >= 4 and all(value(per_worker(metrics_dir, pid, tmp_path / str(turns)), "chatapp_turns_started_total") for pid in pids):
            break
    shares = [value(per_worker(metrics_dir, pid, tmp_path / "final"), "chatapp_turns_finished_total", finish_reason="stop") for pid in pids]
    assert all(shares) and sum(shares) == turns
    # Whichever worker answers the scrape, it reports the whole server.
    for _ in range(6):
        samples = scrape(server.base_url)
        assert value(samples, "chatapp_turns_finished_total", finish_reason="stop") == turns
        assert value(samples, "chatapp_tokens_streamed_total") == 4 * turns


# -- request logs ---------------------------------------------------------------------------


def log_lines(server: ChatServer) -> list[dict]:
    lines = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def cookie_owner(client: httpx.Client) -> str:
    """The anonymous owner id inside the signed session cookie (signed, not secret)."""
    serializer = URLSafeTimedSerializer("any key", salt="cookie-session", serializer=session_json_serializer)
    _, payload = serializer.loads_unsafe(client.cookies["session"])
    return payload["chatapp_owner"]


def test_request_ids_and_json_request_lines(server: ChatServer) -> None:
    with server.client() as client:
        created = client.post("/api/sessions", json={}, headers={"X-Request-ID": "req-from-proxy-42"})
        assert created.headers["X-Request-ID"] == "req-from-proxy-42"
        session_id = created.json()["session_id"]
        bad = client.get(f"/api/sessions/{session_id}", headers={"X-Request-ID": 'evil" id' + "x" * 200})
        generated = bad.headers["X-Request-ID"]
        assert len(generated) == 32 and generated.isalnum()
        client.send_message(session_id, "log me")
        with client.open_stream(session_id) as stream:
            stream_id = stream.headers["X-Request-ID"]
            stream.until_end()
        missing = client.get("/api/sessions/" + "A" * 22)
        assert missing.status_code == 404 and missing.headers["X-Request-ID"]
    lines = wait_for(lambda: (found := {line["request_id"]: line for line in log_lines(server)}) and stream_id in found and found)
    create = lines["req-from-proxy-42"]
    assert {k: create[k] for k in ("method", "path", "status", "stream")} == {"method": "POST", "path": "/api/sessions", "status": 201, "stream": False}
    assert isinstance(create["duration_ms"], (int, float)) and create["time"].endswith("Z")
    # The owner is a stable keyed hash, never the raw anonymous id from the cookie.
    owner = create["owner"]
    raw_owner = cookie_owner(client)
    assert raw_owner.startswith("anon:") and raw_owner not in server.log()
    assert len(owner) == 16 and owner not in raw_owner
    assert lines[generated]["owner"] == owner and lines[generated]["status"] == 200
    streamed = lines[stream_id]
    assert streamed["stream"] is True and streamed["status"] == 200 and streamed["owner"] == owner
    assert streamed["path"] == f"/api/sessions/{session_id}/stream"
    assert lines[missing.headers["X-Request-ID"]]["status"] == 404
