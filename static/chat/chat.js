// chatsite page script: send messages through the JSON API and render answers from the
// conversation's long-lived SSE stream. Plain JS, no build step, no inline code (strict CSP).
//
// Connection states (shown in the status line as data-state):
//   connecting   minting a stream token / opening the first EventSource
//   idle         stream open, no answer in progress
//   streaming    stream open, an assistant message is pending or streaming
//   reconnecting the browser is retrying by itself (Last-Event-ID), or we re-mint after a refusal
//   error        minting failed (retrying with back-off) or a permanent failure
"use strict";

(() => {
  const root = document.querySelector("[data-chat-root]");
  if (!root) return;

  const ACTIVE = new Set(["pending", "streaming"]);
  const FINAL = new Set(["complete", "cancelled", "failed", "interrupted"]);
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const NEAR_BOTTOM_PX = 80;
  const SIDEBAR_LABEL_CHARS = 60;

  const cfg = {
    page: root.dataset.page,
    conversationId: root.dataset.conversationId,
    conversationsUrl: root.dataset.conversationsUrl,
    messagesUrl: root.dataset.messagesUrl,
    streamTokenUrl: root.dataset.streamTokenUrl,
    cancelUrlTemplate: root.dataset.cancelUrlTemplate,
    conversationUrlTemplate: root.dataset.conversationUrlTemplate,
    placeholderId: root.dataset.placeholderId,
  };

  const el = {
    thread: root.querySelector("[data-thread]"),
    scroller: root.querySelector('[data-testid="thread"]'),
    form: root.querySelector('[data-testid="composer"]'),
    input: root.querySelector('[data-testid="composer-input"]'),
    send: root.querySelector('[data-testid="send-button"]'),
    stop: root.querySelector('[data-testid="stop-button"]'),
    error: root.querySelector('[data-testid="composer-error"]'),
    status: root.querySelector('[data-testid="stream-status"]'),
    title: root.querySelector('[data-testid="conversation-title"]'),
    template: document.getElementById("message-template"),
  };

  const state = {
    conn: cfg.page === "conversation" ? "connecting" : "none",
    connDetail: "",
    source: null,
    lastEventId: "",
    failures: 0,
    retryTimer: null,
    everOpened: false,
    leaving: false,
    sending: false,
    cancelling: false,
    refocus: false,
    generation: 0,
    syncing: false,
    syncAgain: false,
    createdConversation: null,
  };

  // ---------------------------------------------------------------- HTTP

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function csrfToken() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    if (input && input.value) return input.value;
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  async function api(url, { method = "GET", body } = {}) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(url, {
        method,
        headers,
        credentials: "same-origin",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new ApiError(0, "network_error", "Can't reach the server. Check your connection.");
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      const message =
        (data && (data.message || data.detail)) || `Request failed (HTTP ${response.status}).`;
      throw new ApiError(response.status, (data && data.code) || "http_error", message);
    }
    return data;
  }

  const fromTemplate = (template, id) => template.split(cfg.placeholderId).join(id);
  const conversationPageUrl = (id) => fromTemplate(cfg.conversationUrlTemplate, id);
  const cancelUrl = (id) => fromTemplate(cfg.cancelUrlTemplate, id);
  const messagesUrlFor = (id) => `${cfg.conversationsUrl}${encodeURIComponent(id)}/messages/`;

  // ---------------------------------------------------------------- bubbles

  function statusLabel(status, errorMessage) {
    switch (status) {
      case "pending":
        return "thinking…";
      case "streaming":
        return errorMessage || "";
      case "cancelled":
        return "stopped";
      case "interrupted":
        return errorMessage ? `interrupted: ${errorMessage}` : "interrupted";
      case "failed":
        return errorMessage ? `failed: ${errorMessage}` : "failed";
      default:
        return "";
    }
  }

  function findBubble(id) {
    if (!id) return null;
    return el.thread.querySelector(`[data-testid="message"][data-message-id="${CSS.escape(id)}"]`);
  }

  function bodyOf(bubble) {
    return bubble.querySelector('[data-testid="message-body"]');
  }

  function setText(bubble, text) {
    bodyOf(bubble).textContent = text || "";
  }

  function appendText(bubble, text) {
    if (!text) return;
    const body = bodyOf(bubble);
    // Grow one text node: no HTML parsing, and no re-copying the whole answer per delta.
    const last = body.lastChild;
    if (last && last.nodeType === Node.TEXT_NODE) last.appendData(text);
    else body.append(text);
  }

  function setStatus(bubble, status, errorMessage) {
    if (errorMessage !== undefined) bubble.dataset.errorMessage = errorMessage || "";
    bubble.dataset.status = status;
    const label = statusLabel(status, bubble.dataset.errorMessage);
    const line = bubble.querySelector('[data-testid="message-status"]');
    line.textContent = label;
    line.hidden = !label;
    bubble.classList.toggle("has-error", Boolean(bubble.dataset.errorMessage));
  }

  function createBubble(message) {
    const bubble = el.template.content.firstElementChild.cloneNode(true);
    const role = message.role === "user" ? "user" : "assistant";
    bubble.classList.add(`message--${role}`);
    bubble.dataset.messageId = message.id;
    bubble.dataset.role = role;
    bubble.querySelector(".message__role").textContent = role === "user" ? "You" : "Claude";
    setText(bubble, message.content);
    setStatus(bubble, message.status || "pending", message.error_message || message.error_code);
    return bubble;
  }

  function removeEmptyState() {
    const empty = el.thread.querySelector('[data-testid="empty-state"]');
    if (empty) empty.remove();
  }

  function insertBubble(bubble, before = null) {
    removeEmptyState();
    if (before) before.before(bubble);
    else el.thread.append(bubble);
  }

  function activeAssistant() {
    return el.thread.querySelector(
      '[data-role="assistant"][data-status="pending"], [data-role="assistant"][data-status="streaming"]',
    );
  }

  // A bubble the database says is finished: take its final text and status.
  function applyFinal(bubble, message) {
    setText(bubble, message.content);
    setStatus(bubble, message.status, message.error_message || message.error_code || "");
  }

  // ---------------------------------------------------------------- scrolling

  function nearBottom() {
    const s = el.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < NEAR_BOTTOM_PX;
  }

  function scrollToBottom() {
    el.scroller.scrollTo({ top: el.scroller.scrollHeight, behavior: "instant" });
  }

  // Follow the answer only if the reader is already at the bottom.
  function keepingScroll(mutate) {
    const follow = nearBottom();
    mutate();
    if (follow) scrollToBottom();
  }

  // ---------------------------------------------------------------- UI state

  function streamState() {
    if (state.conn === "open") return activeAssistant() ? "streaming" : "idle";
    if (state.conn === "none") return "idle";
    return state.conn;
  }

  function renderStatus() {
    const s = streamState();
    const text = {
      connecting: "Connecting…",
      streaming: "Claude is writing…",
      idle: "Ready",
      reconnecting: "Reconnecting…",
      error: "Connection error",
    }[s];
    el.status.dataset.state = s;
    el.status.textContent = state.connDetail && s !== "idle" && s !== "streaming" ? state.connDetail : text;
  }

  function updateUi() {
    const active = activeAssistant();
    const disabled = state.sending || Boolean(active);
    // Disabling drops focus; hand it back when the answer is done so typing can continue.
    if (disabled && document.activeElement === el.input) state.refocus = true;
    el.input.disabled = disabled;
    el.send.disabled = disabled;
    el.stop.hidden = !active;
    el.stop.disabled = state.cancelling;
    if (!disabled && state.refocus) {
      state.refocus = false;
      el.input.focus();
    }
    renderStatus();
  }

  function setConn(conn, detail = "") {
    state.conn = conn;
    state.connDetail = detail;
    renderStatus();
  }

  function showError(message) {
    el.error.textContent = message;
    el.error.hidden = false;
  }

  function hideError() {
    el.error.textContent = "";
    el.error.hidden = true;
  }

  function autosize() {
    el.input.style.height = "auto";
    el.input.style.height = `${el.input.scrollHeight}px`;
  }

  function labelFor(content) {
    const line = content.trim().split("\n")[0];
    return line.length > SIDEBAR_LABEL_CHARS ? `${line.slice(0, SIDEBAR_LABEL_CHARS - 1)}…` : line;
  }

  // The current conversation just got a message: it is now the most recent one.
  function touchSidebar(content) {
    const link = document.querySelector(
      `[data-testid="conversation-link"][data-conversation-id="${CSS.escape(cfg.conversationId)}"]`,
    );
    if (!link) return;
    if (link.textContent.trim() === "Untitled conversation") link.textContent = labelFor(content);
    if (el.title && el.title.textContent.trim() === "New conversation") {
      el.title.textContent = labelFor(content);
    }
    link.parentElement.prepend(link);
  }

  // ---------------------------------------------------------------- history sync

  async function fetchAllMessages() {
    const all = [];
    let url = cfg.messagesUrl;
    for (let page = 0; url && page < 100; page += 1) {
      const data = await api(url);
      if (Array.isArray(data)) return data;
      all.push(...(data.results || []));
      // DRF's `next` is absolute; keep only path and query so a proxy's scheme cannot differ.
      url = data.next ? new URL(data.next, window.location.href) : null;
      url = url && url.pathname + url.search;
    }
    return all;
  }

  // Bring the page in line with the database: add messages made elsewhere (another tab) and
  // finish bubbles whose answer ended while no stream was attached. Active bubbles are left to
  // the stream, whose text is newer than the database checkpoint.
  async function syncHistory() {
    if (cfg.page !== "conversation") return;
    if (state.syncing) {
      state.syncAgain = true;
      return;
    }
    state.syncing = true;
    try {
      do {
        state.syncAgain = false;
        const messages = await fetchAllMessages();
        keepingScroll(() => {
          let previous = null;
          for (const message of messages) {
            let bubble = findBubble(message.id);
            if (!bubble) {
              bubble = createBubble(message);
              removeEmptyState();
              if (previous) previous.after(bubble);
              else el.thread.prepend(bubble);
            } else if (FINAL.has(message.status) && ACTIVE.has(bubble.dataset.status)) {
              applyFinal(bubble, message);
            }
            previous = bubble;
          }
        });
      } while (state.syncAgain);
    } catch {
      // Best effort: the stream stays the source of live text.
    } finally {
      state.syncing = false;
      updateUi();
    }
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
        setStatus(bubble, message.status || "streaming", "");
      } else {
        bubble = createBubble({ ...message, content: "" });
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
    }
    // After the end (or a sync that found it finished) only a new message_start reopens it.
    if (FINAL.has(bubble.dataset.status)) return;
    keepingScroll(() => {
      if (bubble.dataset.status !== "streaming") setStatus(bubble, "streaming");
      appendText(bubble, data.text);
    });
  }

  function onMessageEnd(data) {
    if (!data || !data.message_id) return;
    const bubble = findBubble(data.message_id);
    if (!bubble) {
      syncHistory();
      return;
    }
    keepingScroll(() => {
      setStatus(bubble, data.status || "complete");
      bubble.dataset.stopReason = data.stop_reason || "";
      const usage = data.usage || {};
      if (usage.input_tokens != null) bubble.dataset.inputTokens = usage.input_tokens;
      if (usage.output_tokens != null) bubble.dataset.outputTokens = usage.output_tokens;
    });
  }

  function onErrorEvent(data) {
    if (!data) return;
    const bubble = findBubble(data.message_id);
    const text = data.message || data.code || "Something went wrong.";
    if (bubble) keepingScroll(() => setStatus(bubble, bubble.dataset.status, text));
    else showError(text);
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

  function closeSource() {
    if (state.source) {
      state.source.close();
      state.source = null;
    }
  }

  async function connect() {
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
        setConn("error", "Signed out. Reload the page to sign in again.");
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
        updateUi();
      });
    }

    source.addEventListener("open", () => {
      if (source !== state.source) return;
      const firstOpen = !state.everOpened;
      state.everOpened = true;
      state.failures = 0;
      setConn("open");
      updateUi();
      // An answer may have ended between the page render (or the drop) and this connection.
      if (!firstOpen || activeAssistant()) syncHistory();
    });

    // "error" is both the server's `event: error` (a MessageEvent with data) and the
    // EventSource's own connection error (a plain Event).
    source.addEventListener("error", (event) => {
      if (source !== state.source) return;
      if (typeof event.data === "string") {
        if (event.lastEventId) state.lastEventId = event.lastEventId;
        onErrorEvent(parse(event));
        updateUi();
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

  // ---------------------------------------------------------------- actions

  async function sendMessage() {
    const content = el.input.value;
    if (!content.trim() || state.sending || activeAssistant()) return;
    state.sending = true;
    hideError();
    updateUi();
    let navigating = false;
    try {
      if (cfg.page === "home") {
        // Reuse the conversation made by an earlier failed attempt instead of making another.
        state.createdConversation ||= await api(cfg.conversationsUrl, { method: "POST", body: {} });
        const id = state.createdConversation.id;
        await api(messagesUrlFor(id), { method: "POST", body: { content } });
        navigating = true;
        window.location.assign(conversationPageUrl(id));
        return;
      }
      const data = await api(cfg.messagesUrl, { method: "POST", body: { content } });
      el.input.value = "";
      autosize();
      keepingScroll(() => {
        const assistant = findBubble(data.assistant_message.id);
        // The stream may have announced the answer first; it then keeps its newer state.
        if (!findBubble(data.user_message.id)) {
          insertBubble(createBubble(data.user_message), assistant);
        }
        if (!assistant) insertBubble(createBubble(data.assistant_message));
      });
      scrollToBottom();
      touchSidebar(content);
    } catch (err) {
      showError(err.message);
      if (err.status === 409) syncHistory();
    } finally {
      if (!navigating) {
        state.sending = false;
        updateUi();
      }
    }
  }

  async function cancelActive() {
    const active = activeAssistant();
    if (!active || state.cancelling) return;
    state.cancelling = true;
    updateUi();
    try {
      await api(cancelUrl(active.dataset.messageId), { method: "POST" });
    } catch (err) {
      showError(err.message);
    } finally {
      state.cancelling = false;
      updateUi();
    }
  }

  async function newConversation(button) {
    button.disabled = true;
    hideError();
    try {
      const conversation = await api(cfg.conversationsUrl, { method: "POST", body: {} });
      window.location.assign(conversationPageUrl(conversation.id));
    } catch (err) {
      showError(err.message);
      button.disabled = false;
    }
  }

  // ---------------------------------------------------------------- wiring

  el.form.addEventListener("submit", (event) => {
    event.preventDefault();
    sendMessage();
  });

  el.input.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || event.shiftKey || event.altKey || event.ctrlKey || event.metaKey) {
      return;
    }
    if (event.isComposing || event.keyCode === 229) return; // IME is confirming a word
    event.preventDefault();
    sendMessage();
  });

  el.input.addEventListener("input", autosize);
  el.stop.addEventListener("click", cancelActive);

  for (const button of document.querySelectorAll('[data-action="new-conversation"]')) {
    button.addEventListener("click", () => newConversation(button));
  }

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

  scrollToBottom();
  updateUi();
  if (cfg.page === "conversation") connect();
  if (!el.input.disabled) el.input.focus();
})();
