// chatsite page script, the stream client: one long-lived EventSource per conversation page
// (GET /stream/… with a short-lived token minted by the API), resuming after the last event
// seen (Last-Event-ID, or ?last_event_id= on a fresh token), with back-off on refusals, and
// the SSE events (message_start, delta, message_end, error) dispatched to the bubbles.
//
// Connection states (shown in the status line as data-state):
//   connecting   minting a stream token / opening the first EventSource
//   idle         stream open, no answer in progress
//   streaming    stream open, an assistant message is pending or streaming
//   reconnecting the browser is retrying by itself (Last-Event-ID), or we re-mint after a refusal
//   offline      the browser says there is no network; we reconnect when it comes back
//   error        minting failed (retrying with back-off) or a permanent failure

import { api } from "./api.js";
import {
  activeAssistant,
  announceEnd,
  appendText,
  createBubble,
  findBubble,
  insertBubble,
  keepingScroll,
  renderNow,
  setContextNote,
  refreshConversationUsage,
  setMeta,
  setStatus,
  setText,
  setUsage,
  syncHistory,
} from "./messages.js";
import { ACTIVE, BACKOFF_MAX_MS, BACKOFF_MIN_MS, cfg, el, FINAL, hooks, state } from "./page.js";

// ---------------------------------------------------------------- status line

function streamState() {
  if (state.offline && cfg.page === "conversation") return "offline";
  if (state.conn === "open") return activeAssistant() ? "streaming" : "idle";
  if (state.conn === "none") return "idle";
  return state.conn;
}

export function renderStatus() {
  const s = streamState();
  const text = {
    connecting: "Connecting…",
    streaming: "Claude is writing…",
    idle: "Ready",
    reconnecting: "Reconnecting…",
    offline: "Offline — waiting for the network",
    error: "Connection error",
  }[s];
  el.status.dataset.state = s;
  el.statusText.textContent =
    state.connDetail && !["idle", "streaming", "offline"].includes(s) ? state.connDetail : text;
}

function setConn(conn, detail = "") {
  state.conn = conn;
  state.connDetail = detail;
  renderStatus();
}

// ---------------------------------------------------------------- stream events

function parse(event) {
  try {
    return JSON.parse(event.data);
  } catch {
    return null;
  }
}

function onMessageStart(data) {
  const message = data && data.message;
  if (!message || !message.id) return;
  let bubble = findBubble(message.id);
  keepingScroll(() => {
    if (bubble) {
      // A (re)connection restarts the message: its text follows in full.
      setText(bubble, "");
      if (message.model) bubble.dataset.model = message.model;
      setStatus(bubble, message.status || "streaming", "");
      setContextNote(bubble, message.context_omitted_turns);
      state.spoken.delete(message.id);
    } else {
      bubble = createBubble({ ...message, content: "", reply_to: state.regeneratingFor });
      insertBubble(bubble);
      // Started from another tab or client: fetch the user turn we have not seen.
      if (!state.sending) syncHistory();
    }
  });
}

function onDelta(data) {
  if (!data || !data.message_id) return;
  let bubble = findBubble(data.message_id);
  if (!bubble) {
    bubble = createBubble({ id: data.message_id, role: "assistant", status: "streaming" });
    insertBubble(bubble);
    hooks.updateUi();
  }
  // After the end (or a sync that found it finished) only a new message_start reopens it.
  if (FINAL.has(bubble.dataset.status)) return;
  if (bubble.dataset.status !== "streaming") setStatus(bubble, "streaming");
  appendText(bubble, data.text);
}

function onMessageEnd(data) {
  if (!data || !data.message_id) return;
  const bubble = findBubble(data.message_id);
  if (!bubble) {
    syncHistory();
    return;
  }
  keepingScroll(() => {
    const wasActive = ACTIVE.has(bubble.dataset.status);
    setStatus(bubble, data.status || "complete");
    bubble.dataset.stopReason = data.stop_reason || "";
    const usage = data.usage || {};
    setUsage(bubble, usage.input_tokens, usage.output_tokens, usage.estimated);
    renderNow(bubble);
    setMeta(bubble);
    if (wasActive) {
      refreshConversationUsage();
      announceEnd(bubble);
    }
  });
}

function onErrorEvent(data) {
  if (!data) return;
  const bubble = findBubble(data.message_id);
  const text = data.message || data.code || "Something went wrong.";
  if (bubble) keepingScroll(() => setStatus(bubble, bubble.dataset.status, text));
  else hooks.showError(text);
}

const handlers = {
  message_start: onMessageStart,
  delta: onDelta,
  message_end: onMessageEnd,
};

// ---------------------------------------------------------------- connection

function backoffDelay() {
  const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** state.failures);
  state.failures += 1;
  return delay;
}

function scheduleConnect(delay, conn, detail) {
  clearTimeout(state.retryTimer);
  setConn(conn, detail);
  state.retryTimer = setTimeout(connect, delay);
}

export function closeSource() {
  if (state.source) {
    state.source.close();
    state.source = null;
  }
}

// Our access ended (the account was deactivated, its password changed, or we were signed
// out): reconnecting cannot succeed, so sign in again and come back here. If the session
// is still good (the password was changed in this very session), the login page sends us
// straight back.
function goToLogin() {
  state.leaving = true;
  clearTimeout(state.retryTimer);
  closeSource();
  const next = window.location.pathname + window.location.search;
  window.location.assign(`${cfg.loginUrl}?next=${encodeURIComponent(next)}`);
}

export async function connect() {
  clearTimeout(state.retryTimer);
  closeSource();
  if (state.leaving) return;
  // Only the latest attempt may open a stream; an older one still minting gives up.
  const generation = ++state.generation;
  setConn(state.everOpened ? "reconnecting" : "connecting");

  let minted;
  try {
    minted = await api(cfg.streamTokenUrl, { method: "POST" });
  } catch (err) {
    if (state.leaving || generation !== state.generation) return;
    if (err.status === 401 || err.status === 403) {
      goToLogin();
    } else if (err.status === 404) {
      setConn("error", "This conversation no longer exists.");
    } else {
      const delay = backoffDelay();
      scheduleConnect(delay, "error", `Connection failed. Retrying in ${Math.round(delay / 1000)} s…`);
    }
    return;
  }
  if (state.leaving || generation !== state.generation) return;

  // A resume position the server keeps refusing (e.g. one it no longer knows) is dropped: a
  // fresh stream restarts the active message in full and the history sync fills the rest.
  if (state.failures >= 3) state.lastEventId = "";
  let url = minted.stream_url;
  if (state.lastEventId) {
    url += `${url.includes("?") ? "&" : "?"}last_event_id=${encodeURIComponent(state.lastEventId)}`;
  }
  const source = new EventSource(url);
  state.source = source;

  for (const [name, handle] of Object.entries(handlers)) {
    source.addEventListener(name, (event) => {
      if (source !== state.source) return;
      if (event.lastEventId) state.lastEventId = event.lastEventId;
      handle(parse(event));
      // A delta only adds text (rendered on the next frame); everything else may change
      // which controls apply.
      if (name === "delta") renderStatus();
      else hooks.updateUi();
    });
  }

  source.addEventListener("open", () => {
    if (source !== state.source) return;
    const firstOpen = !state.everOpened;
    state.everOpened = true;
    state.failures = 0;
    setConn("open");
    hooks.updateUi();
    // An answer may have ended between the page render (or the drop) and this connection.
    if (!firstOpen || activeAssistant()) syncHistory();
  });

  // "error" is both the server's `event: error` (a MessageEvent with data) and the
  // EventSource's own connection error (a plain Event).
  source.addEventListener("error", (event) => {
    if (source !== state.source) return;
    if (typeof event.data === "string") {
      const data = parse(event);
      // The stream's last event: the server refuses this user's streams from now on.
      if (data && data.code === "auth_revoked") {
        goToLogin();
        return;
      }
      if (event.lastEventId) state.lastEventId = event.lastEventId;
      onErrorEvent(data);
      hooks.updateUi();
      return;
    }
    if (state.leaving) return;
    if (source.readyState === EventSource.CLOSED) {
      // Refused before the stream (expired token, 429, …): a fresh token, resuming after
      // the last event we saw. The first retry is immediate; repeated refusals back off.
      closeSource();
      if (state.failures === 0) {
        state.failures = 1;
        connect();
      } else {
        const delay = backoffDelay();
        scheduleConnect(delay, "reconnecting", `Reconnecting in ${Math.round(delay / 1000)} s…`);
      }
    } else {
      // CONNECTING: the browser retries by itself and sends Last-Event-ID.
      setConn("reconnecting");
    }
  });
}

// ---------------------------------------------------------------- network and page life

// The browser's offline/online events, and leaving the page or coming back to it from the
// back/forward cache: close the stream, or reconnect.
export function watchConnectivity() {
  window.addEventListener("offline", () => {
    state.offline = true;
    renderStatus();
  });

  window.addEventListener("online", () => {
    state.offline = false;
    if (cfg.page === "conversation" && state.conn !== "open" && !state.leaving) {
      state.failures = 0;
      connect();
    }
    renderStatus();
  });

  window.addEventListener("pagehide", () => {
    state.leaving = true;
    clearTimeout(state.retryTimer);
    closeSource();
  });

  window.addEventListener("pageshow", (event) => {
    // Restored from the back/forward cache: the old stream is gone, resume where it stopped.
    if (event.persisted && cfg.page === "conversation") {
      state.leaving = false;
      state.failures = 0;
      connect();
    }
  });
}
