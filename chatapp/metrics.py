"""Prometheus metrics of one app, kept in a registry of its own.

Every :class:`~chatapp.ChatApp` holds one :class:`Metrics` in its state, with its own
``CollectorRegistry`` (never prometheus_client's process-wide default), so two apps in
one process, or the many apps of a test run, never share or clash over counts. The code
that does the work records through small methods (:meth:`Metrics.turn_started`,
:meth:`Metrics.cache_hit`, ...); ``GET <prefix>/metrics`` renders the text format.

Each worker process counts for itself, and a scrape reaches one worker. When
``PROMETHEUS_MULTIPROC_DIR`` names a directory, prometheus_client's multiprocess mode
is on: every worker writes its numbers there and any worker's ``/metrics`` answers the
sum for the whole server (the gunicorn config empties the directory at start and drops
dead workers' gauges). That mode is process-wide, so it suits one chatapp app per process.
"""

from __future__ import annotations

import re
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .events import FINISH_REASONS

__all__ = ["Metrics", "TurnWatch"]
_LABEL = re.compile(r"^[a-z0-9_]{1,40}$")

# Time to first token is mostly upstream latency: tenths of a second to tens of seconds.
_FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
_TURN_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def _label(value: str) -> str:
    """A label value from a bounded set: anything unexpected is ``other``."""
    return value if _LABEL.match(value) else "other"


class Metrics:
    """The counters, gauges and histograms of one app."""

    def __init__(self, *, multiprocess_dir: str | None = None) -> None:
        #: ``PROMETHEUS_MULTIPROC_DIR``: where every worker's numbers are summed from.
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.open_streams = Gauge(
            "chatapp_open_streams", "Event streams open now.", registry=r, multiprocess_mode="livesum"
        )
        self.turns_started = Counter("chatapp_turns_started", "Replies started.", registry=r)
        self.turns_finished = Counter(
            "chatapp_turns_finished", "Replies finished, by finish_reason.", ["finish_reason"], registry=r
        )
        self.tokens = Counter("chatapp_tokens_streamed", "Token events produced.", registry=r)
        self.first_token = Histogram(
            "chatapp_time_to_first_token_seconds",
            "From the start of a reply to its first token.",
            buckets=_FIRST_TOKEN_BUCKETS,
            registry=r,
        )
        self.turn_duration = Histogram(
            "chatapp_turn_duration_seconds", "From the start of a reply to its end.", buckets=_TURN_BUCKETS, registry=r
        )
        self.upstream_errors = Counter(
            "chatapp_upstream_errors", "Replies failed by the upstream, by error code.", ["code"], registry=r
        )
        self.cache_hits = Counter("chatapp_cache_hits", "Replies served from the response cache.", registry=r)
        self.cache_misses = Counter("chatapp_cache_misses", "Cache lookups that found nothing.", registry=r)
        self.heartbeats = Counter("chatapp_heartbeats", "Heartbeat comments sent to readers.", registry=r)
        self.takeovers = Counter(
            "chatapp_takeovers", "Turns taken over from a dead worker, by how: continued or restarted.", ["how"], registry=r
        )
        # Every finish_reason shows from the start, so rate() sees the first one too.
        for reason in FINISH_REASONS:
            self.turns_finished.labels(reason)

    # -- recording ------------------------------------------------------------------------

    def turn_started(self) -> TurnWatch:
        """Count a reply and return the watch that records its tokens and its end."""
        self.turns_started.inc()
        return TurnWatch(self)

    def takeover(self, how: str) -> None:
        self.takeovers.labels(how=_label(how)).inc()

    def cache_hit(self) -> None:
        self.cache_hits.inc()

    def cache_miss(self) -> None:
        self.cache_misses.inc()

    def heartbeat(self) -> None:
        self.heartbeats.inc()

    def stream_opened(self) -> None:
        self.open_streams.inc()

    def stream_closed(self) -> None:
        self.open_streams.dec()

    # -- exposition -----------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        path = self.multiprocess_dir
        if path is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=path)
        return generate_latest(merged), CONTENT_TYPE_LATEST


#: Tokens a reply counts on its own before adding them to the shared counter.
_TOKENS_PER_COUNT = 256


class TurnWatch:
    """Records one reply: its tokens, time to first token, upstream errors and end."""

    __slots__ = ("_counted", "_metrics", "_started", "_tokens")

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._started = time.monotonic()
        self._tokens = 0
        self._counted = 0

    def tokens(self, count: int) -> None:
        """Count ``count`` tokens just published (a cached replay publishes all at once)."""
        if self._tokens == 0 and count:
            self._metrics.first_token.observe(time.monotonic() - self._started)
        self._tokens += count
        # The shared counter takes a lock: add to it every few hundred tokens, not per token.
        if self._tokens - self._counted >= _TOKENS_PER_COUNT:
            self._count_tokens()

    def _count_tokens(self) -> None:
        self._metrics.tokens.inc(self._tokens - self._counted)
        self._counted = self._tokens

    def upstream_error(self, code: str) -> None:
        self._metrics.upstream_errors.labels(_label(code)).inc()

    def finished(self, finish_reason: str) -> None:
        self._count_tokens()
        self._metrics.turns_finished.labels(_label(finish_reason)).inc()
        self._metrics.turn_duration.observe(time.monotonic() - self._started)
