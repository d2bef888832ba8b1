// The load generator: raw sockets (Node's `net`), minimal SSE parsing, one process.
//
// node bench/loadgen.js '<json config>'
//
// It talks to the orchestrator (bench/harness.py) over stdio: at each point where the
// orchestrator must read the server's CPU time or memory it prints `MARK <name>` and
// waits for a line on stdin; at the end it prints `RESULT <json>`. Only 127.0.0.1, a
// bounded number of connections, and a deadline after which it reports and exits.
//
// Modes:
//   stream  N streams of `tokens` token events each (W1, W2, W4). With `stamp`, each
//           token's text starts with `@<unix time>` set where the token was made, and
//           every arrival is compared with it (latency from creation to receipt).
//   idle    N open streams held for `hold_s` seconds, counting heartbeats (W3).
// Targets:
//   peer     GET <path> directly.
//   chatapp  the whole path: POST /api/sessions (before the clock starts), then, timed,
//            POST .../messages and GET .../stream with the session's cookie.
"use strict";

const net = require("net");
const readline = require("readline");
const { performance } = require("perf_hooks");

const cfg = JSON.parse(process.argv[2]);
const HOST = "127.0.0.1";
const nowMs = () => performance.timeOrigin + performance.now();

const TOKEN = Buffer.from("event: token");
const END = Buffer.from("event: end");
const PING = Buffer.from(": ping");
const STAMP = /"text": ?"@(\d+\.\d+)/g;

// -- talking to the orchestrator ----------------------------------------------------------

const lines = readline.createInterface({ input: process.stdin });
const waiting = [];
lines.on("line", (line) => { const resolve = waiting.shift(); if (resolve) resolve(line); });

function mark(name) {
  process.stdout.write(`MARK ${name}\n`);
  return new Promise((resolve) => waiting.push(resolve));
}

function report(result) {
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
}

const deadline = setTimeout(() => {
  report({ error: `deadline of ${cfg.deadline_s}s passed`, partial: summary() });
  process.exit(2);
}, cfg.deadline_s * 1000);

// -- plain requests (setup) ----------------------------------------------------------------

function request(method, path, headers = {}, body = null) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(cfg.port, HOST);
    const chunks = [];
    let head = `${method} ${path} HTTP/1.1\r\nHost: ${HOST}:${cfg.port}\r\nConnection: close\r\n`;
    for (const [name, value] of Object.entries(headers)) head += `${name}: ${value}\r\n`;
    const payload = body === null ? null : Buffer.from(body);
    if (payload) head += `Content-Length: ${payload.length}\r\n`;
    socket.on("connect", () => { socket.write(head + "\r\n"); if (payload) socket.write(payload); });
    socket.on("data", (chunk) => chunks.push(chunk));
    socket.on("error", reject);
    socket.on("close", () => {
      const text = Buffer.concat(chunks).toString("utf8");
      const split = text.indexOf("\r\n\r\n");
      if (split < 0) return reject(new Error(`${method} ${path}: no response`));
      const [statusLine, ...headerLines] = text.slice(0, split).split("\r\n");
      const cookies = headerLines.filter((l) => /^set-cookie:/i.test(l)).map((l) => l.slice(11).trim().split(";")[0]);
      resolve({ status: Number(statusLine.slice(9, 12)), cookies, body: text.slice(split + 4) });
    });
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function pool(count, limit, task) {
  let next = 0;
  const workers = [];
  for (let w = 0; w < Math.min(limit, count); w++) {
    workers.push((async () => { while (next < count) { const i = next++; await task(i); } })());
  }
  await Promise.all(workers);
}

// -- streams -------------------------------------------------------------------------------

const stats = { tokens: 0, ends: 0, pings: 0, bytes: 0, failed: 0, statuses: {}, latencies: [], steadyFrom: Infinity };
const sockets = [];

// Occurrences of `marker` in `buffer` that start at `from` or later.
function count(buffer, marker, from = 0) {
  let n = 0;
  let at = buffer.indexOf(marker, from);
  while (at !== -1) { n++; at = buffer.indexOf(marker, at + marker.length); }
  return n;
}

// Open one stream; resolves `opened` on the response head and `closed` at the end.
function openStream(path, headers, { stamp }) {
  let markOpen;
  let markClosed;
  const opened = new Promise((resolve) => { markOpen = resolve; });
  const closed = new Promise((resolve) => { markClosed = resolve; });
  const socket = net.connect(cfg.port, HOST);
  sockets.push(socket);
  socket.setNoDelay(true);
  let head = Buffer.alloc(0);
  let inBody = false;
  let carry = Buffer.alloc(0);
  let text = "";
  let sawEnd = false;
  let status = 0;
  let req = `GET ${path} HTTP/1.1\r\nHost: ${HOST}:${cfg.port}\r\nAccept: text/event-stream\r\nConnection: close\r\n`;
  for (const [name, value] of Object.entries(headers)) req += `${name}: ${value}\r\n`;
  socket.on("connect", () => socket.write(req + "\r\n"));

  const body = (chunk) => {
    stats.bytes += chunk.length;
    const data = carry.length ? Buffer.concat([carry, chunk]) : chunk;
    // A marker that lies wholly in the carried tail was counted with the previous read.
    const since = (marker) => Math.max(0, carry.length - marker.length + 1);
    stats.tokens += count(data, TOKEN, since(TOKEN));
    stats.pings += count(data, PING, since(PING));
    if (!sawEnd && count(data, END, since(END))) { sawEnd = true; stats.ends++; }
    // Keep the tail that could hold the start of a marker split across reads.
    carry = Buffer.from(data.subarray(Math.max(0, data.length - (TOKEN.length - 1))));
    if (stamp) {
      const received = nowMs();
      text += chunk.toString("latin1");
      const cut = text.lastIndexOf("\n");
      if (cut >= 0) {
        const whole = text.slice(0, cut);
        text = text.slice(cut);
        for (const match of whole.matchAll(STAMP)) {
          const created = Number(match[1]) * 1000;
          if (created >= stats.steadyFrom) stats.latencies.push(received - created);
          else (stats.rampLatencies ||= []).push(received - created);
        }
      }
    }
  };

  socket.on("data", (chunk) => {
    if (inBody) return body(chunk);
    head = Buffer.concat([head, chunk]);
    const split = head.indexOf("\r\n\r\n");
    if (split < 0) return;
    status = Number(head.subarray(9, 12).toString());
    stats.statuses[status] = (stats.statuses[status] || 0) + 1;
    inBody = true;
    markOpen(status);
    if (head.length > split + 4) body(head.subarray(split + 4));
  });
  socket.on("error", () => {});
  socket.on("close", () => {
    if (!inBody) markOpen(0);
    if (status !== 200 || (cfg.mode === "stream" && !sawEnd)) stats.failed++;
    markClosed();
  });
  return { opened, closed, socket };
}

// -- chatapp's setup ---------------------------------------------------------------------

const prefix = cfg.prefix || "";

async function createSession() {
  const response = await request("POST", `${prefix}/api/sessions`, { "Content-Type": "application/json" }, "{}");
  if (response.status !== 201) throw new Error(`create session: ${response.status} ${response.body.slice(0, 200)}`);
  return { id: JSON.parse(response.body).session_id, cookie: response.cookies.join("; ") };
}

async function createSessions(n) {
  const sessions = new Array(n);
  await pool(n, cfg.setup_concurrency || 32, async (i) => { sessions[i] = await createSession(); });
  return sessions;
}

// -- the modes -----------------------------------------------------------------------------

let window = { start: 0, end: 0, cpuStart: null, cpu: null };
let openedAt = 0;

function summary() {
  const elapsed = (window.end || nowMs()) - window.start;
  const cpu = window.cpu || (window.cpuStart ? process.cpuUsage(window.cpuStart) : { user: 0, system: 0 });
  const result = {
    streams: cfg.streams,
    tokens: stats.tokens,
    ends: stats.ends,
    failed: stats.failed,
    statuses: stats.statuses,
    bytes: stats.bytes,
    pings: stats.pings,
    elapsed_s: elapsed / 1000,
    loadgen_cpu_s: (cpu.user + cpu.system) / 1e6,
  };
  result.loadgen_cpu_pct = elapsed > 0 ? (100 * result.loadgen_cpu_s) / (elapsed / 1000) : 0;
  if (cfg.stamp) {
    const sorted = Float64Array.from(stats.latencies).sort();
    const pick = (q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : null);
    result.latency_ms = { n: sorted.length, p50: pick(0.5), p99: pick(0.99), max: sorted.length ? sorted[sorted.length - 1] : null };
    const ramp = Float64Array.from(stats.rampLatencies || []).sort();
    result.ramp_latency_ms = { n: ramp.length, p99: ramp.length ? ramp[Math.floor(0.99 * ramp.length)] : null };
  }
  return result;
}

async function startWindow(name) {
  await mark(name);
  window.start = nowMs();
  window.cpuStart = process.cpuUsage();
}

async function endWindow(name) {
  window.end = nowMs();
  window.cpu = process.cpuUsage(window.cpuStart);
  await mark(name);
}

async function streamMode() {
  const n = cfg.streams;
  const query = `n=${cfg.tokens}&delay_ms=${cfg.delay_ms}&stamp=${cfg.stamp ? 1 : 0}`;
  const sessions = cfg.target === "chatapp" ? await createSessions(n) : null;
  const run = Date.now();
  await startWindow("start");
  const closed = [];
  let open = 0;
  let allOpen;
  const everyoneOpen = new Promise((resolve) => { allOpen = resolve; });
  await pool(n, cfg.concurrency || n, async (i) => {
    let stream;
    if (sessions) {
      const { id, cookie } = sessions[i];
      const body = JSON.stringify({ message: `benchmark ${run} stream ${i}` });
      const posted = await request("POST", `${prefix}/api/sessions/${id}/messages`, { Cookie: cookie, "Content-Type": "application/json" }, body);
      if (posted.status !== 202) throw new Error(`post message: ${posted.status} ${posted.body.slice(0, 200)}`);
      stream = openStream(`${prefix}/api/sessions/${id}/stream`, { Cookie: cookie }, cfg);
    } else {
      stream = openStream(`${cfg.path}?${query}`, {}, cfg);
    }
    closed.push(stream.closed);
    await stream.opened;
    if (++open === n) allOpen();
  });
  await everyoneOpen;
  openedAt = nowMs();
  // Steady state: tokens made from one second after the last stream opened; the
  // server's CPU is read over `steady_s` seconds of it.
  stats.steadyFrom = openedAt + 1000;
  const steady = cfg.steady_s
    ? (async () => {
        await sleep(1000);
        await mark("steady");
        await sleep(cfg.steady_s * 1000);
        await mark("steady-end");
      })()
    : Promise.resolve();
  await Promise.all(closed);
  window.end = nowMs();
  window.cpu = process.cpuUsage(window.cpuStart);
  await steady;
  await mark("end");
  const result = summary();
  result.open_s = (openedAt - window.start) / 1000;
  return result;
}

async function idleMode() {
  const n = cfg.streams;
  await mark("before");
  const sessions = cfg.target === "chatapp" ? await createSessions(n) : null;
  await mark("sessions");
  const streams = [];
  const began = nowMs();
  let failedOpen = 0;
  await pool(n, cfg.concurrency || 256, async (i) => {
    const path = sessions ? `${prefix}/api/sessions/${sessions[i].id}/stream?follow=1` : `${cfg.path}?hb=${cfg.hb}`;
    const stream = openStream(path, sessions ? { Cookie: sessions[i].cookie } : {}, { stamp: false });
    streams.push(stream);
    if ((await stream.opened) !== 200) failedOpen++;
  });
  const openS = (nowMs() - began) / 1000;
  await startWindow("opened");
  const pingsBefore = stats.pings;
  await new Promise((resolve) => setTimeout(resolve, cfg.hold_s * 1000));
  const pings = stats.pings - pingsBefore;
  let stillOpen = 0;
  for (const s of streams) if (!s.socket.destroyed && s.socket.readyState === "open") stillOpen++;
  await endWindow("held");
  for (const s of streams) s.socket.resetAndDestroy();
  const result = summary();
  Object.assign(result, { open_s: openS, failed_open: failedOpen, still_open: stillOpen, hold_pings: pings, pings_per_stream_s: pings / n / cfg.hold_s });
  return result;
}

(cfg.mode === "idle" ? idleMode() : streamMode())
  .then((result) => { clearTimeout(deadline); report(result); process.exit(0); })
  .catch((error) => { clearTimeout(deadline); report({ error: String(error && error.stack || error), partial: summary() }); process.exit(1); });
