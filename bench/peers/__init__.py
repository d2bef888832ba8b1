"""Minimal peer servers with the same workload as chatapp's benchmark.

Every peer serves the same three routes on loopback:

- ``GET /stream?n=N&delay_ms=D&stamp=S``: a ``retry`` frame, N ``token`` events (each
  with an id and JSON data ``{"text": ...}``), then an ``end`` event, and the response
  closes. ``delay_ms`` paces the tokens (0 = as fast as possible); ``stamp=1`` starts each
  token's text with ``@<unix time>`` taken when the token is made, so the load generator
  can measure the latency from creation to receipt.
- ``GET /idle?hb=S``: an open stream with a ``: ping`` heartbeat every S seconds.
- ``GET /healthz``: 200 once the server is up.
"""
