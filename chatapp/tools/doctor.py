"""``chatapp doctor URL``: is the way from a deployment to its browsers fit for streaming?

It talks to the deployment exactly as a browser would, through whatever proxies, load
balancers and CDNs stand in front of it (asking for gzip like a browser, so a compressing
hop shows itself), and checks:

- **unbuffered**: each event's id carries the server's clock (``<ms>-<seq>``), so the
  time an event arrived minus the time it was produced should be about the same for
  every event. When a hop holds the body, early events wait longest: the spread of those
  delays is how long events were held.
- **heartbeats**: on an idle ``?follow=1`` stream the server sends ``: ping`` every
  ``heartbeat_seconds`` (from ``/healthz``); none arriving means something holds them.
- **idle**: the same idle stream must stay open for ``--idle-seconds``; a hop that cuts
  it has an idle or total timeout too short for event streams.

It names the likely culprit (proxy buffering, compression, idle timeout) with the fix.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import httpx

from .client import APIError, ChatAPI, StreamItem, StreamReader

__all__ = ["CULPRITS", "Check", "DoctorError", "Report", "diagnose"]

DEFAULT_MESSAGE = "chatapp doctor: please answer in a few sentences."

#: Each culprit and how to fix it.
CULPRITS = {
    "proxy buffering": (
        "a proxy holds the response body. nginx: `proxy_buffering off;` in the stream's "
        "location (chatapp sends `X-Accel-Buffering: no`, which nginx obeys unless "
        "`proxy_ignore_headers` drops it); other proxies and CDNs: turn off response "
        "buffering for text/event-stream."
    ),
    "compression": (
        "a hop compresses the stream and holds events until its compression buffer fills. "
        "Turn compression off for text/event-stream (nginx: `gzip off;` in the stream's "
        "location; CDNs: exclude the /api/sessions/*/stream route)."
    ),
    "idle timeout": (
        "a hop closes streams that stay open or quiet too long. Raise its read/idle timeout "
        "(nginx `proxy_read_timeout 1h;`, your load balancer's idle timeout) well above "
        "CHATAPP_HEARTBEAT_SECONDS, or lower CHATAPP_HEARTBEAT_SECONDS below it."
    ),
}

_EVENT_ID = re.compile(r"^(\d{1,20})-\d{1,20}$")
# Below this much server-side spread a buffered and an unbuffered reply look alike.
_MIN_SPREAD = 0.3


class DoctorError(Exception):
    """The checks could not run: nothing answered, or not chatapp, or refused."""


@dataclass
class Check:
    name: str
    #: ``ok``, ``fail``, or ``warn`` (could not tell).
    status: str
    detail: str
    culprit: str | None = None


@dataclass
class Report:
    url: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.status != "fail" for check in self.checks)

    @property
    def culprits(self) -> list[str]:
        found: list[str] = []
        for check in self.checks:
            if check.status == "fail" and check.culprit and check.culprit not in found:
                found.append(check.culprit)
        return found

    def to_dict(self) -> dict[str, object]:
        return {"url": self.url, "ok": self.ok, "culprits": self.culprits, "checks": [asdict(c) for c in self.checks]}

    def render(self) -> str:
        lines = [f"chatapp doctor  {self.url}"]
        for check in self.checks:
            lines.append(f"  {check.status.upper():5} {check.name:11} {check.detail}")
        if self.ok:
            lines.append("No problem found: events stream through unbuffered and idle streams survive.")
        for culprit in self.culprits:
            lines.append(f"Likely culprit: {culprit}. Fix: {CULPRITS[culprit]}")
        if not self.ok and not self.culprits:
            lines.append("Something is wrong, but it does not look like a proxy problem; see the checks above.")
        return "\n".join(lines)

    def json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def diagnose(
    url: str,
    *,
    idle_seconds: float = 60.0,
    message: str = DEFAULT_MESSAGE,
    headers: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> Report:
    """Run every check against the chatapp at ``url`` (its base, with any prefix)."""
    report = Report(url)
    with ChatAPI(url, headers=headers) as api:
        heartbeat = _check_health(api, report)
        try:
            session_id = api.create_session()["session_id"]
            # A fresh question each run: a cached reply replays all at once, which would
            # hide how the server paces a real one.
            api.send(session_id, f"{message} ({secrets.token_hex(4)})")
        except APIError as exc:
            hint = " (the site wants a signed-in user: pass its cookie with -H 'Cookie: ...')" if exc.status == 401 else ""
            raise DoctorError(f"could not start a reply: {exc}{hint}") from None
        try:
            end_id, compressed = _check_turn(api, session_id, report, timeout)
            if end_id is not None:
                _check_idle(api, session_id, end_id, report, heartbeat, idle_seconds, compressed)
        finally:
            try:
                api.delete(session_id)
            except httpx.HTTPError:
                pass
    return report


def _check_health(api: ChatAPI, report: Report) -> float | None:
    try:
        response = api.health()
    except httpx.HTTPError as exc:
        raise DoctorError(f"cannot reach {api.base_url}: {exc}") from None
    try:
        body = response.json()
        backend = body["broker"]["backend"]
    except (ValueError, KeyError, TypeError):
        raise DoctorError(
            f"{api.url('/healthz')} answered {response.status_code} without chatapp's health JSON; "
            "is the URL the chat's base, with its prefix (e.g. https://example.com/assistant)?"
        ) from None
    if response.status_code != 200:
        raise DoctorError(f"chatapp answers but is not healthy ({response.status_code}): {body.get('status')}")
    heartbeat = body.get("heartbeat_seconds")
    heartbeat = float(heartbeat) if isinstance(heartbeat, (int, float)) else None
    every = f", a heartbeat every {heartbeat:g} s" if heartbeat else ""
    report.checks.append(Check("health", "ok", f"/healthz answered 200 ({backend} broker{every})"))
    return heartbeat


def _check_turn(api: ChatAPI, session_id: str, report: Report, timeout: float) -> tuple[str | None, bool]:
    """Read one reply; check the stream's headers and whether events were held."""
    with api.stream(session_id, accept_encoding="gzip, deflate") as reader:
        compressed = _check_headers(reader, report)
        timer = reader.stop_after(timeout)
        events: list[StreamItem] = []
        for item in reader.items():
            if item.kind == "event":
                events.append(item)
                if item.event == "end":
                    break
        timer.cancel()
    if not events or events[-1].event != "end":
        how = "was cut" if reader.closed_by_server else f"did not finish within {timeout:g} s"
        report.checks.append(Check("reply", "fail", f"the reply's stream {how} before its end event ({len(events)} events)"))
        return None, compressed
    tokens = sum(e.event == "token" for e in events)
    report.checks.append(Check("reply", "ok", f"start, {tokens} tokens and end arrived"))
    report.checks.append(_judge_buffering(events, "compression" if compressed else "proxy buffering"))
    return events[-1].id, compressed


def _check_headers(reader: StreamReader, report: Report) -> bool:
    response = reader.response
    content_type = response.headers.get("content-type", "")
    if not content_type.startswith("text/event-stream"):
        report.checks.append(Check("stream", "fail", f"answered {content_type or 'no content type'}, not text/event-stream"))
    encoding = response.headers.get("content-encoding", "identity").lower()
    if encoding not in ("identity", ""):
        report.checks.append(Check("stream", "fail", f"the stream arrived compressed (Content-Encoding: {encoding})", "compression"))
        return True
    if content_type.startswith("text/event-stream"):
        report.checks.append(Check("stream", "ok", "200 text/event-stream, not compressed"))
    return False


def _server_seconds(event_id: str) -> float | None:
    match = _EVENT_ID.match(event_id)
    return int(match.group(1)) / 1000 if match else None


def _judge_buffering(events: list[StreamItem], culprit: str) -> Check:
    timed = [(server, e.at) for e in events if (server := _server_seconds(e.id)) is not None]
    if len(timed) < 3:
        # Ids of another format: all events in one or two reads is the tell.
        reads = len({e.read for e in events})
        if len(events) >= 5 and reads <= 2:
            return Check("unbuffered", "fail", f"{len(events)} events arrived in {reads} read(s)", culprit)
        return Check("unbuffered", "warn", "event ids carry no server time; cannot compare arrival with pace")
    spread = timed[-1][0] - timed[0][0]
    delays = [arrived - produced for produced, arrived in timed]
    held = max(delays) - min(delays)
    if spread < _MIN_SPREAD:
        return Check(
            "unbuffered", "warn", f"the server produced the reply in {spread:.2f} s, too fast to tell a held stream from a quick one"
        )
    arrived = timed[-1][1] - timed[0][1]
    detail = f"the server produced {len(timed)} events over {spread:.2f} s; they arrived over {arrived:.2f} s"
    if held > max(0.25, spread / 2):
        return Check("unbuffered", "fail", f"{detail}, some held back {held:.2f} s", culprit)
    return Check("unbuffered", "ok", f"{detail} (held at most {held:.2f} s)")


def _check_idle(
    api: ChatAPI,
    session_id: str,
    end_id: str,
    report: Report,
    heartbeat: float | None,
    idle_seconds: float,
    compressed: bool,
) -> None:
    """Hold an idle follow stream open: heartbeats should pass and it should survive."""
    with api.stream(session_id, follow=True, last_event_id=end_id, accept_encoding="gzip, deflate", read_timeout=None) as reader:
        timer = reader.stop_after(idle_seconds)
        pings = [item for item in reader.items() if item.kind == "comment"]
        timer.cancel()
        lasted = time.monotonic() - reader.opened
    held_culprit = "compression" if compressed else "proxy buffering"
    expected = int(lasted // heartbeat) if heartbeat else None
    if pings:
        reads = len({p.read for p in pings})
        if len(pings) >= 3 and reads == 1:
            report.checks.append(Check("heartbeats", "fail", f"{len(pings)} heartbeats arrived all at once after {lasted:.1f} s", held_culprit))
        else:
            report.checks.append(Check("heartbeats", "ok", f"{len(pings)} heartbeat(s) arrived in {lasted:.1f} s"))
    elif reader.closed_by_server and not expected:
        report.checks.append(Check("heartbeats", "warn", f"the stream was closed after {lasted:.1f} s, before a heartbeat was due"))
    elif expected:
        report.checks.append(
            Check("heartbeats", "fail", f"no heartbeat in {lasted:.1f} s, though the server sends one every {heartbeat:g} s", held_culprit)
        )
    else:
        due = f"every {heartbeat:g} s" if heartbeat else "at an unknown pace"
        report.checks.append(
            Check("heartbeats", "warn", f"no heartbeat in {lasted:.1f} s, but the server sends them {due}; use a longer --idle-seconds")
        )
    if reader.closed_by_server:
        passed = "although heartbeats passed" if pings else "with no heartbeat passing"
        report.checks.append(Check("idle", "fail", f"the idle stream was closed after {lasted:.1f} s, {passed}", "idle timeout"))
    else:
        report.checks.append(Check("idle", "ok", f"an idle stream stayed open {idle_seconds:g} s"))
