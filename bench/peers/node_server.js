// The Node baseline: the `http` module alone, as a Node developer writes it.
// node bench/peers/node_server.js PORT
"use strict";
const http = require("http");
const { performance } = require("perf_hooks");

const port = Number(process.argv[2] || 8000);
const HEADERS = { "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache", "X-Accel-Buffering": "no" };
const END_DATA = '{"finish_reason":"stop"}';

function tokenText(stamp) {
  return stamp ? "@" + ((performance.timeOrigin + performance.now()) / 1000).toFixed(6) + " token" : " token";
}

function stream(req, res, q) {
  const n = Number(q.get("n") || 2000);
  const delay = Number(q.get("delay_ms") || 0);
  const stamp = q.get("stamp") === "1";
  const base = Date.now() + "-";
  let i = 0;
  let closed = false;
  res.on("close", () => { closed = true; });
  res.writeHead(200, HEADERS);
  res.write("retry: 3000\n\n");
  const frame = () => "event: token\nid: " + base + i + "\ndata: " + JSON.stringify({ text: tokenText(stamp) }) + "\n\n";
  const finish = () => res.end("event: end\nid: " + base + n + "\ndata: " + END_DATA + "\n\n");
  if (delay === 0) {
    // As fast as the socket takes it: write until the buffer is full, then wait for drain.
    const pump = () => {
      while (i < n && !closed) {
        const ok = res.write(frame());
        i++;
        if (!ok) { res.once("drain", pump); return; }
      }
      if (!closed) finish();
    };
    pump();
  } else {
    const tick = () => {
      if (closed) return;
      res.write(frame());
      i++;
      if (i < n) setTimeout(tick, delay); else finish();
    };
    setTimeout(tick, delay);
  }
}

function idle(req, res, q) {
  const beat = Number(q.get("hb") || 15) * 1000;
  res.writeHead(200, HEADERS);
  res.write("retry: 3000\n\n");
  const timer = setInterval(() => res.write(": ping\n\n"), beat);
  res.on("close", () => clearInterval(timer));
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://localhost");
  if (url.pathname === "/stream") return stream(req, res, url.searchParams);
  if (url.pathname === "/idle") return idle(req, res, url.searchParams);
  if (url.pathname === "/healthz") { res.writeHead(200); return res.end("ok"); }
  res.writeHead(404);
  res.end();
});
server.keepAliveTimeout = 5000;
server.listen(port, "127.0.0.1");
process.on("SIGTERM", () => process.exit(0));
