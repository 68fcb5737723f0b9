// Peer: the relay a Node developer would write with the `http` module, no npm deps.
//
// GET /stream   POST the upstream's /v1/messages with stream=true, parse its SSE by
//               hand, re-emit each text delta as `event: delta` / `data: {"text": ...}`,
//               then `event: message_end`. A client leaving aborts the upstream request.
// GET /idle     `retry:` then a `: ping` heartbeat every 15 s (one timer for all streams).
// GET /health   200.
//
// Usage: node bench/peers/node_relay.js --port 8002 --upstream http://127.0.0.1:8099
"use strict";

const http = require("http");

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const PORT = Number(arg("port", "8002"));
const UPSTREAM = new URL(arg("upstream", "http://127.0.0.1:8099"));
const HEARTBEAT_MS = 15000;
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
const BODY = JSON.stringify({
  model: "claude-sonnet-4-5",
  max_tokens: 1024,
  stream: true,
  messages: [{ role: "user", content: "bench" }],
});
const SSE_HEADERS = {
  "Content-Type": "text/event-stream",
  "Cache-Control": "no-cache",
  "X-Accel-Buffering": "no",
};

// Incremental SSE parser: lines end with CRLF, CR or LF; a blank line dispatches.
function sseParser(onEvent) {
  let buf = "";
  let event = "";
  let data = [];
  return (text) => {
    buf += text;
    let held = "";
    if (buf.endsWith("\r")) {
      held = "\r";
      buf = buf.slice(0, -1);
    }
    const lines = buf.split(/\r\n|\r|\n/);
    buf = lines.pop() + held;
    for (const line of lines) {
      if (line === "") {
        if (data.length) onEvent(event || "message", data.join("\n"));
        event = "";
        data = [];
      } else if (line[0] !== ":") {
        const i = line.indexOf(":");
        const name = i < 0 ? line : line.slice(0, i);
        let value = i < 0 ? "" : line.slice(i + 1);
        if (value[0] === " ") value = value.slice(1);
        if (name === "event") event = value;
        else if (name === "data") data.push(value);
      }
    }
  };
}

function relay(req, res) {
  let done = false;
  const upstream = http.request(
    {
      host: UPSTREAM.hostname,
      port: UPSTREAM.port,
      path: "/v1/messages",
      method: "POST",
      agent,
      headers: {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(BODY),
        "x-api-key": "bench",
        "anthropic-version": "2023-06-01",
      },
    },
    (up) => {
      if (up.statusCode !== 200) {
        res.writeHead(502, { "Content-Type": "text/plain" });
        res.end(`upstream ${up.statusCode}`);
        up.resume();
        return;
      }
      res.writeHead(200, SSE_HEADERS);
      up.setEncoding("utf8");
      const feed = sseParser((event, data) => {
        if (event !== "content_block_delta") return;
        const delta = JSON.parse(data).delta;
        if (delta.type === "text_delta") {
          res.write(`event: delta\ndata: ${JSON.stringify({ text: delta.text })}\n\n`);
        }
      });
      up.on("data", feed);
      up.on("end", () => {
        done = true;
        res.end("event: message_end\ndata: {}\n\n");
      });
    },
  );
  upstream.on("error", () => {
    if (!res.headersSent) res.writeHead(502);
    res.end();
  });
  res.on("close", () => {
    if (!done) upstream.destroy();
  });
  upstream.end(BODY);
}

const idle = new Set();
setInterval(() => {
  for (const res of idle) res.write(": ping\n\n");
}, HEARTBEAT_MS);

const server = http.createServer((req, res) => {
  if (req.url === "/stream") return relay(req, res);
  if (req.url === "/idle") {
    res.writeHead(200, SSE_HEADERS);
    res.write("retry: 2000\n\n");
    idle.add(res);
    res.on("close", () => idle.delete(res));
    return;
  }
  if (req.url === "/health") return res.end("ok");
  res.writeHead(404);
  res.end();
});
server.keepAliveTimeout = 65000;
server.listen(PORT, "127.0.0.1", 4096, () => {
  console.log(`node-relay listening on http://127.0.0.1:${PORT}`);
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
