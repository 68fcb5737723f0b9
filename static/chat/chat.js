// chatsite page script: send messages through the JSON API and render answers from the
// conversation's long-lived SSE stream. Plain JS, no build step, no inline code (strict CSP).
//
// Connection states (shown in the status line as data-state):
//   connecting   minting a stream token / opening the first EventSource
//   idle         stream open, no answer in progress
//   streaming    stream open, an assistant message is pending or streaming
//   reconnecting the browser is retrying by itself (Last-Event-ID), or we re-mint after a refusal
//   offline      the browser says there is no network; we reconnect when it comes back
//   error        minting failed (retrying with back-off) or a permanent failure
//
// Each message keeps its raw text in a <template data-testid="message-source">; assistant
// text is rendered as markdown (static/chat/markdown.js) at most once per animation frame.
// A finished answer loaded from the API is shown as the server rendered it (its `html`,
// sanitized there with the same rules, and again here by DOMPurify), like the history the
// page came with.
//
// History: the page comes with the latest turns; scrolling near the top loads older ones
// from the messages API (newest-first cursor pages), whole turns at a time, keeping the
// reader's place, until there are none left.
//
// Keyboard: Enter sends, Shift+Enter adds a line, Escape stops the answer (or closes the
// sidebar on a phone); while an answer streams, focus moves from the composer to Stop.
"use strict";

(() => {
  const root = document.querySelector("[data-chat-root]");
  if (!root) return;

  const ACTIVE = new Set(["pending", "streaming"]);
  const FINAL = new Set(["complete", "cancelled", "failed", "interrupted"]);
  const RETRYABLE = new Set(["failed", "interrupted"]);
  const BUDGET_EXHAUSTED = "token_budget_exhausted";
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const NEAR_BOTTOM_PX = 80;
  const NEAR_TOP_PX = 400; // start loading older messages this close to the top
  const MAX_SYNC_PAGES = 100;
  const OLDER_RETRY_MS = 2000;
  const SIDEBAR_LABEL_CHARS = 60;
  const SIDEBAR_COOKIE = "chatsite_sidebar";
  const markdown = window.chatMarkdown || {
    render: (target, text) => {
      target.textContent = text;
    },
    decorateCodeBlocks: () => {},
    copyText: async () => false,
    flashCopied: () => {},
    renderHtml: null,
  };

  const cfg = {
    page: root.dataset.page,
    conversationId: root.dataset.conversationId,
    model: root.dataset.model,
    conversationsUrl: root.dataset.conversationsUrl,
    conversationApiUrl: root.dataset.conversationApiUrl,
    messagesUrl: root.dataset.messagesUrl,
    olderMessagesUrl: root.dataset.olderMessagesUrl,
    streamTokenUrl: root.dataset.streamTokenUrl,
    cancelUrlTemplate: root.dataset.cancelUrlTemplate,
    regenerateUrlTemplate: root.dataset.regenerateUrlTemplate,
    conversationUrlTemplate: root.dataset.conversationUrlTemplate,
    homeUrl: root.dataset.homeUrl,
    loginUrl: root.dataset.loginUrl,
    placeholderId: root.dataset.placeholderId,
  };

  const byTestId = (id, scope = root) => scope.querySelector(`[data-testid="${id}"]`);
  const el = {
    thread: root.querySelector("[data-thread]"),
    scroller: byTestId("thread"),
    older: byTestId("older-messages"),
    form: byTestId("composer"),
    input: byTestId("composer-input"),
    send: byTestId("send-button"),
    stop: byTestId("stop-button"),
    error: byTestId("composer-error"),
    status: byTestId("stream-status"),
    statusText: root.querySelector(".status-line__text"),
    title: byTestId("conversation-title"),
    titleInput: byTestId("rename-input"),
    renameButton: byTestId("rename-conversation"),
    jump: byTestId("jump-to-latest"),
    sidebar: byTestId("sidebar"),
    backdrop: byTestId("sidebar-backdrop"),
    sidebarToggle: byTestId("sidebar-toggle"),
    live: byTestId("answer-live", document),
    settings: byTestId("conversation-settings", document),
    deleteDialog: byTestId("delete-dialog", document),
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
    offline: navigator.onLine === false,
    follow: true,
    jumping: false,
    regeneratingFor: null, // the user turn a regenerate request is answering
    paused: false, // today's tokens are spent: sending waits for the budget to renew
    pauseTimer: null,
    attemptShown: new Map(), // user turn -> id of the attempt the reader chose to see
    dirty: new Set(),
    frame: 0,
    spoken: new Map(), // message id -> characters already announced
    olderUrl: cfg.olderMessagesUrl || "", // the next page of older messages; "" once all are here
    loadingOlder: false,
    olderRetryAt: 0, // after a failed load, scrolling retries from this time on
  };

  // ---------------------------------------------------------------- HTTP

  class ApiError extends Error {
    constructor(status, code, message, retryAfter = 0) {
      super(message);
      this.status = status;
      this.code = code;
      this.retryAfter = retryAfter; // seconds, from the Retry-After header (0: none)
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
      let message =
        (data && (data.message || data.detail)) || `Request failed (HTTP ${response.status}).`;
      const fieldErrors = data && data.errors;
      if (fieldErrors && typeof fieldErrors === "object") {
        const details = Object.entries(fieldErrors).map(
          ([field, problems]) => `${field}: ${[].concat(problems).join(" ")}`,
        );
        if (details.length) message = `${message} ${details.join("; ")}`;
      }
      const retryAfter = Number(response.headers.get("Retry-After")) || 0;
      throw new ApiError(response.status, (data && data.code) || "http_error", message, retryAfter);
    }
    return data;
  }

  const fromTemplate = (template, id) => template.split(cfg.placeholderId).join(id);
  const conversationPageUrl = (id) => fromTemplate(cfg.conversationUrlTemplate, id);
  const cancelUrl = (id) => fromTemplate(cfg.cancelUrlTemplate, id);
  const regenerateUrl = (id) => fromTemplate(cfg.regenerateUrlTemplate, id);
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

  function allBubbles() {
    return el.thread.querySelectorAll('[data-testid="message"]');
  }

  function findBubble(id) {
    if (!id) return null;
    return el.thread.querySelector(`[data-testid="message"][data-message-id="${CSS.escape(id)}"]`);
  }

  const bodyOf = (bubble) => bubble.querySelector('[data-testid="message-body"]');
  const sourceOf = (bubble) => bubble.querySelector('[data-testid="message-source"]').content;
  const control = (bubble, action) => bubble.querySelector(`[data-action="${action}"]`);
  const isAssistant = (bubble) => bubble.dataset.role === "assistant";

  function textOf(bubble) {
    return sourceOf(bubble).textContent;
  }

  function hasText(bubble) {
    for (const node of sourceOf(bubble).childNodes) if (node.data) return true;
    return false;
  }

  function setText(bubble, text) {
    sourceOf(bubble).replaceChildren(document.createTextNode(text || ""));
    bubble.serverHtml = null; // the server's HTML, if any, was for other text
    scheduleRender(bubble);
  }

  function appendText(bubble, text) {
    if (!text) return;
    // Grow one text node: no re-copying the whole answer per delta.
    const source = sourceOf(bubble);
    const last = source.lastChild;
    if (last && last.nodeType === Node.TEXT_NODE) last.appendData(text);
    else source.append(text);
    scheduleRender(bubble);
  }

  // The streaming cursor sits at the end of the last text, inside the innermost last block.
  function placeCursor(body) {
    const lastContent = (node) => {
      let child = node.lastChild;
      while (child && child.nodeType === Node.TEXT_NODE && !child.data.trim()) {
        child = child.previousSibling;
      }
      return child;
    };
    let target = body;
    for (;;) {
      const last = lastContent(target);
      if (!last || last.nodeType !== Node.ELEMENT_NODE || /^(BR|HR)$/.test(last.tagName)) break;
      target = last;
    }
    const cursor = document.createElement("span");
    cursor.className = "cursor";
    cursor.setAttribute("aria-hidden", "true");
    target.append(cursor);
  }

  function renderNow(bubble) {
    state.dirty.delete(bubble);
    const body = bodyOf(bubble);
    const text = textOf(bubble);
    if (!isAssistant(bubble)) {
      body.textContent = text;
      return;
    }
    if (bubble.serverHtml != null && markdown.renderHtml && FINAL.has(bubble.dataset.status)) {
      markdown.renderHtml(body, bubble.serverHtml);
    } else {
      markdown.render(body, text);
    }
    if (bubble.dataset.status === "streaming") placeCursor(body);
  }

  function scheduleRender(bubble) {
    state.dirty.add(bubble);
    if (!state.frame) state.frame = requestAnimationFrame(flushRenders);
  }

  function flushRenders() {
    state.frame = 0;
    for (const bubble of [...state.dirty]) {
      renderNow(bubble);
      if (ACTIVE.has(bubble.dataset.status)) announceProgress(bubble, false);
    }
    if (state.follow) scrollToBottom();
    updateJump();
  }

  function setStatus(bubble, status, errorMessage) {
    if (errorMessage !== undefined) bubble.dataset.errorMessage = errorMessage || "";
    const was = bubble.dataset.status;
    bubble.dataset.status = status;
    const label = statusLabel(status, bubble.dataset.errorMessage);
    const line = bubble.querySelector('[data-testid="message-status"]');
    line.textContent = label;
    line.hidden = !label;
    bubble.classList.toggle("has-error", Boolean(bubble.dataset.errorMessage));
    if (was !== status && isAssistant(bubble)) scheduleRender(bubble); // cursor on/off
  }

  function setMeta(bubble) {
    const meta = bubble.querySelector('[data-testid="message-meta"]');
    if (!isAssistant(bubble) || ACTIVE.has(bubble.dataset.status)) {
      meta.textContent = "";
      return;
    }
    const parts = [bubble.dataset.model || cfg.model].filter(Boolean);
    const { inputTokens, outputTokens } = bubble.dataset;
    // A stopped or broken answer knows its input tokens but not its output.
    if (inputTokens) parts.push(`${inputTokens} in`);
    if (inputTokens && outputTokens) parts.push(`${outputTokens} out`);
    meta.textContent = parts.join(" · ");
  }

  // Earlier exchanges left out of what the model was sent (the conversation is longer than
  // its context window): said above the answer, from the API or the stream's message_start.
  function setContextNote(bubble, omitted) {
    const count = Number(omitted) || 0;
    bubble.dataset.contextOmittedTurns = String(count);
    const note = bubble.querySelector('[data-testid="context-note"]');
    const what = count === 1 ? "exchange" : `${count} exchanges`;
    note.textContent = count
      ? `Claude was not sent the first ${what} of this conversation: the whole conversation is longer than its context window.`
      : "";
    note.hidden = !count;
  }

  function setUsage(bubble, inputTokens, outputTokens) {
    if (inputTokens != null) bubble.dataset.inputTokens = inputTokens;
    if (outputTokens != null) bubble.dataset.outputTokens = outputTokens;
  }

  function createBubble(message) {
    const bubble = el.template.content.firstElementChild.cloneNode(true);
    const role = message.role === "user" ? "user" : "assistant";
    bubble.classList.add(`message--${role}`);
    bubble.dataset.messageId = message.id;
    bubble.dataset.role = role;
    bubble.dataset.replyTo = (role === "assistant" && message.reply_to) || "";
    bubble.dataset.model = cfg.model || "";
    bubble.querySelector(".message__role").textContent = role === "user" ? "You" : "Claude";
    if (role === "user") bodyOf(bubble).classList.remove("markdown");
    setUsage(bubble, message.input_tokens, message.output_tokens);
    if (role === "assistant") setContextNote(bubble, message.context_omitted_turns);
    setStatus(bubble, message.status || "pending", message.error_message || message.error_code);
    setText(bubble, message.content);
    bubble.serverHtml = message.html ?? null;
    renderNow(bubble);
    setMeta(bubble);
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

  // A bubble the database says is finished: take its final text, status and usage.
  function applyFinal(bubble, message) {
    setUsage(bubble, message.input_tokens, message.output_tokens);
    setStatus(bubble, message.status, message.error_message || message.error_code || "");
    setText(bubble, message.content);
    bubble.serverHtml = message.html ?? null;
    renderNow(bubble);
    setMeta(bubble);
  }

  // ---------------------------------------------------------------- attempts

  // Regenerating keeps earlier answers to the same user turn; the page shows one attempt
  // per turn (the latest, unless the reader picked another) with an "n / m" switcher.
  const turnOf = (bubble) => bubble.dataset.replyTo || bubble.dataset.messageId;

  function attemptGroups() {
    const groups = new Map();
    for (const bubble of el.thread.querySelectorAll('[data-testid="message"][data-role="assistant"]')) {
      const turn = turnOf(bubble);
      if (!groups.has(turn)) groups.set(turn, []);
      groups.get(turn).push(bubble);
    }
    return groups;
  }

  function refreshAttempts() {
    for (const [turn, group] of attemptGroups()) {
      let shown = group.findIndex((b) => b.dataset.messageId === state.attemptShown.get(turn));
      if (shown < 0) shown = group.length - 1;
      group.forEach((bubble, index) => {
        bubble.hidden = index !== shown;
        bubble.querySelector('[data-testid="attempts"]').hidden = group.length < 2;
        bubble.querySelector('[data-testid="attempt-counter"]').textContent =
          `${index + 1} / ${group.length}`;
        control(bubble, "attempt-prev").disabled = index === 0;
        control(bubble, "attempt-next").disabled = index === group.length - 1;
      });
    }
  }

  function showAttempt(bubble, step) {
    const turn = turnOf(bubble);
    const group = attemptGroups().get(turn) || [];
    const target = group[group.indexOf(bubble) + step];
    if (!target) return;
    state.attemptShown.set(turn, target.dataset.messageId);
    refreshAttempts();
    updateUi();
    // The clicked button just disappeared with its bubble: keep focus on the switcher.
    const same = control(target, step < 0 ? "attempt-prev" : "attempt-next");
    (same.disabled ? control(target, step < 0 ? "attempt-next" : "attempt-prev") : same).focus();
  }

  // Only the answer that ends the conversation can be regenerated (or retried), when idle.
  function refreshControls(busy) {
    const bubbles = allBubbles();
    const last = bubbles[bubbles.length - 1];
    for (const bubble of bubbles) {
      control(bubble, "regenerate").hidden = true;
      control(bubble, "retry").hidden = true;
      control(bubble, "copy-message").hidden =
        !hasText(bubble) || (isAssistant(bubble) && ACTIVE.has(bubble.dataset.status));
    }
    if (!last || !isAssistant(last) || busy || !FINAL.has(last.dataset.status)) return;
    const group = attemptGroups().get(turnOf(last)) || [last];
    const visible = group.find((b) => !b.hidden) || last;
    const retry = visible === last && RETRYABLE.has(last.dataset.status);
    const button = control(visible, retry ? "retry" : "regenerate");
    button.hidden = false;
    button.disabled = state.paused;
  }

  // ---------------------------------------------------------------- scrolling

  function distanceFromBottom() {
    const s = el.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight;
  }

  function scrollToBottom(behavior = "instant") {
    el.scroller.scrollTo({ top: el.scroller.scrollHeight, behavior });
  }

  function updateJump() {
    el.jump.hidden = distanceFromBottom() < NEAR_BOTTOM_PX;
  }

  // Follow the answer only if the reader is at the bottom (`state.follow`, kept by scrolling).
  function keepingScroll(mutate) {
    mutate();
    if (state.follow) scrollToBottom();
    updateJump();
  }

  // ---------------------------------------------------------------- announcements

  // The visible answer is re-rendered many times a second; screen readers get it from a
  // polite live region instead, a sentence or so at a time.
  function speakable(text) {
    return text.replace(/```[^\n]*/g, "").replace(/[*_`#>|~]+/g, "");
  }

  function announceProgress(bubble, final) {
    const id = bubble.dataset.messageId;
    const text = speakable(textOf(bubble));
    const said = Math.min(state.spoken.get(id) || 0, text.length);
    let upTo = text.length;
    if (!final) {
      const boundary = Math.max(
        text.lastIndexOf(". "),
        text.lastIndexOf("! "),
        text.lastIndexOf("? "),
        text.lastIndexOf("\n"),
      );
      upTo = boundary + 1;
    }
    if (upTo <= said) return;
    state.spoken.set(id, upTo);
    const chunk = text.slice(said, upTo).trim();
    if (chunk) el.live.textContent = chunk;
  }

  function announceEnd(bubble) {
    announceProgress(bubble, true);
    const status = bubble.dataset.status;
    if (status !== "complete") {
      const label = statusLabel(status, bubble.dataset.errorMessage);
      el.live.textContent = `${el.live.textContent} (Answer ${label}.)`.trim();
    }
  }

  // ---------------------------------------------------------------- UI state

  function streamState() {
    if (state.offline && cfg.page === "conversation") return "offline";
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
      offline: "Offline — waiting for the network",
      error: "Connection error",
    }[s];
    el.status.dataset.state = s;
    el.statusText.textContent =
      state.connDetail && !["idle", "streaming", "offline"].includes(s) ? state.connDetail : text;
  }

  function focusIsLost() {
    const focused = document.activeElement;
    return !focused || focused === document.body || focused === el.stop || focused === el.input;
  }

  function updateUi() {
    const active = activeAssistant();
    const busy = state.sending || Boolean(active);
    const hadFocus = document.activeElement === el.input;
    // Disabling drops focus: park it on Stop while the answer streams (so Enter stops it)
    // and hand it back to the composer when the answer is done.
    if (busy && hadFocus) state.refocus = true;
    el.input.disabled = busy;
    el.send.disabled = busy || state.paused;
    el.stop.hidden = !active;
    el.stop.disabled = state.cancelling;
    if (active && state.refocus && focusIsLost() && document.activeElement !== el.stop) {
      el.stop.focus();
    }
    if (!busy && state.refocus) {
      state.refocus = false;
      if (focusIsLost()) el.input.focus();
    }
    refreshAttempts();
    refreshControls(busy);
    renderStatus();
  }

  function setConn(conn, detail = "") {
    state.conn = conn;
    state.connDetail = detail;
    renderStatus();
  }

  function showError(message, kind = "") {
    el.error.textContent = message;
    el.error.dataset.kind = kind;
    el.error.hidden = false;
  }

  function hideError() {
    el.error.textContent = "";
    el.error.dataset.kind = "";
    el.error.hidden = true;
  }

  // Today's tokens are spent (429 token_budget_exhausted): say so, and keep Send (and
  // Regenerate) off until the budget renews — Retry-After is the next UTC midnight — or
  // the page is reloaded. The draft stays in the composer.
  function pauseSending(err) {
    const seconds = err.retryAfter > 0 ? err.retryAfter : 60;
    const until = new Date(Date.now() + seconds * 1000);
    const time = until.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    state.paused = true;
    clearTimeout(state.pauseTimer);
    state.pauseTimer = setTimeout(resumeSending, seconds * 1000);
    showError(`${err.message} Sending is paused until ${time}.`, "budget");
    updateUi();
  }

  function resumeSending() {
    state.paused = false;
    if (el.error.dataset.kind === "budget") hideError();
    updateUi();
  }

  function autosize() {
    el.input.style.height = "auto";
    el.input.style.height = `${el.input.scrollHeight}px`;
  }

  function labelFor(content) {
    const line = content.trim().split("\n")[0];
    return line.length > SIDEBAR_LABEL_CHARS ? `${line.slice(0, SIDEBAR_LABEL_CHARS - 1)}…` : line;
  }

  function currentSidebarLink() {
    return document.querySelector(
      `[data-testid="conversation-link"][data-conversation-id="${CSS.escape(cfg.conversationId)}"]`,
    );
  }

  // The current conversation just got a message: it is now the most recent one.
  function touchSidebar(content) {
    const link = currentSidebarLink();
    if (!link) return;
    if (link.textContent.trim() === "Untitled conversation") link.textContent = labelFor(content);
    if (el.title && el.title.textContent.trim() === "New conversation") {
      el.title.textContent = labelFor(content);
    }
    const heading = link.parentElement.querySelector(".sidebar__heading");
    if (heading) heading.after(link);
    else link.parentElement.prepend(link);
  }

  // ---------------------------------------------------------------- history sync

  // DRF's page links are absolute; keep only path and query so a proxy's scheme cannot differ.
  function localUrl(link) {
    if (!link) return "";
    const url = new URL(link, window.location.href);
    return url.pathname + url.search;
  }

  function newestFirstUrl(url) {
    const parsed = new URL(url, window.location.href);
    parsed.searchParams.set("ordering", "-created_at");
    return parsed.pathname + parsed.search;
  }

  // The newest messages, newest first, down to one this page already shows as finished (and
  // past every one it shows as active): what the page may have missed, without the history.
  async function fetchRecentMessages() {
    const found = [];
    const waitingFor = new Set(
      [...allBubbles()].filter((b) => ACTIVE.has(b.dataset.status)).map((b) => b.dataset.messageId),
    );
    let reachedKnown = false;
    let url = newestFirstUrl(cfg.messagesUrl);
    for (let page = 0; url && page < MAX_SYNC_PAGES; page += 1) {
      const data = await api(url);
      for (const message of data.results || []) {
        found.push(message);
        waitingFor.delete(message.id);
        const bubble = findBubble(message.id);
        if (bubble && !ACTIVE.has(bubble.dataset.status)) reachedKnown = true;
      }
      if (reachedKnown && !waitingFor.size) break;
      url = localUrl(data.next);
    }
    return found.reverse();
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
        const messages = await fetchRecentMessages();
        keepingScroll(() => {
          // Messages older than the first one the page shows are the older loader's business;
          // an empty thread takes them all.
          let previous = null;
          let anchored = allBubbles().length === 0;
          for (const message of messages) {
            let bubble = findBubble(message.id);
            if (!bubble) {
              if (!anchored) continue;
              bubble = createBubble(message);
              removeEmptyState();
              if (previous) previous.after(bubble);
              else el.thread.append(bubble);
            } else if (FINAL.has(message.status) && ACTIVE.has(bubble.dataset.status)) {
              applyFinal(bubble, message);
            }
            anchored = true;
            if (message.role === "assistant" && message.reply_to) {
              bubble.dataset.replyTo = message.reply_to;
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

  // ---------------------------------------------------------------- older messages

  function showOlderStatus(text) {
    el.older.textContent = text;
    el.older.hidden = !text;
  }

  // A turn is a question and its answers; an older page may end inside one (its first
  // message an answer whose question is older still). Keep reading until the batch starts
  // with a question, so the "n / m" switcher of every loaded turn is complete.
  const startsATurn = (message) => message.role === "user" || !message.reply_to;

  async function fetchOlderTurns() {
    const batch = []; // oldest first
    let url = state.olderUrl;
    while (url) {
      const data = await api(url);
      for (const message of data.results || []) batch.unshift(message);
      url = localUrl(data.next);
      if (!batch.length || startsATurn(batch[0])) break;
    }
    return { batch, next: url };
  }

  async function loadOlder() {
    state.loadingOlder = true;
    showOlderStatus("Loading earlier messages…");
    try {
      const { batch, next } = await fetchOlderTurns();
      // Keep what the reader sees where it is: the first visible bubble stays put on screen.
      const anchor = [...allBubbles()].find((bubble) => !bubble.hidden);
      const before = anchor ? anchor.getBoundingClientRect().top : 0;
      const fresh = batch.filter((message) => !findBubble(message.id)).map(createBubble);
      const first = el.thread.querySelector('[data-testid="message"]');
      if (fresh.length) {
        removeEmptyState();
        if (first) first.before(...fresh);
        else el.thread.append(...fresh);
      }
      state.olderUrl = next;
      showOlderStatus("");
      updateUi(); // groups the loaded answers with their attempts
      if (anchor) el.scroller.scrollTop += anchor.getBoundingClientRect().top - before;
      updateJump();
    } catch {
      state.olderRetryAt = Date.now() + OLDER_RETRY_MS;
      showOlderStatus("Couldn't load earlier messages. Scroll up to try again.");
    } finally {
      state.loadingOlder = false;
    }
    maybeLoadOlder();
  }

  // Near the top (or a history too short to scroll), with more to load: load it.
  function maybeLoadOlder() {
    if (!state.olderUrl || state.loadingOlder || Date.now() < state.olderRetryAt) return;
    if (el.scroller.scrollTop < NEAR_TOP_PX) loadOlder();
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
      updateUi();
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
      setUsage(bubble, usage.input_tokens, usage.output_tokens);
      renderNow(bubble);
      setMeta(bubble);
      if (wasActive) announceEnd(bubble);
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
        else updateUi();
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
        const data = parse(event);
        // The stream's last event: the server refuses this user's streams from now on.
        if (data && data.code === "auth_revoked") {
          goToLogin();
          return;
        }
        if (event.lastEventId) state.lastEventId = event.lastEventId;
        onErrorEvent(data);
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
    if (!content.trim() || state.sending || state.paused || activeAssistant()) return;
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
      state.follow = true;
      keepingScroll(() => {
        const assistant = findBubble(data.assistant_message.id);
        // The stream may have announced the answer first; it then keeps its newer state.
        if (!findBubble(data.user_message.id)) {
          insertBubble(createBubble(data.user_message), assistant);
        }
        if (!assistant) insertBubble(createBubble(data.assistant_message));
        else assistant.dataset.replyTo = data.user_message.id;
      });
      scrollToBottom();
      touchSidebar(content);
    } catch (err) {
      if (err.code === BUDGET_EXHAUSTED) pauseSending(err);
      else showError(err.message);
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
      const message = await api(cancelUrl(active.dataset.messageId), { method: "POST" });
      // The stream's message_end may still be on its way: the stored answer is final.
      if (message && FINAL.has(message.status) && ACTIVE.has(active.dataset.status)) {
        applyFinal(active, message);
        announceEnd(active);
      }
    } catch (err) {
      showError(err.message);
    } finally {
      state.cancelling = false;
      updateUi();
    }
  }

  // A new answer to the turn `bubble` answers (Regenerate, or Retry after an error).
  async function regenerate(bubble) {
    if (state.sending || state.paused || activeAssistant()) return;
    const bubbles = allBubbles();
    const latest = bubbles[bubbles.length - 1];
    if (!latest || turnOf(latest) !== turnOf(bubble)) return;
    state.sending = true;
    state.regeneratingFor = latest.dataset.replyTo || null;
    hideError();
    updateUi();
    try {
      const answer = await api(regenerateUrl(latest.dataset.messageId), { method: "POST" });
      let fresh = findBubble(answer.id);
      if (!fresh) {
        fresh = createBubble(answer);
        insertBubble(fresh);
      }
      fresh.dataset.replyTo = answer.reply_to || latest.dataset.replyTo || "";
      state.attemptShown.delete(turnOf(fresh));
      state.follow = true;
      scrollToBottom();
    } catch (err) {
      if (err.code === BUDGET_EXHAUSTED) pauseSending(err);
      else showError(err.message);
      if (err.status === 409) syncHistory();
    } finally {
      state.sending = false;
      state.regeneratingFor = null;
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

  async function copyFrom(button, text) {
    markdown.flashCopied(button, await markdown.copyText(text));
  }

  // ---------------------------------------------------------------- conversation settings

  function applyTitle(title) {
    const label = labelFor(title) || "New conversation";
    el.title.textContent = label;
    const link = currentSidebarLink();
    if (link) {
      link.textContent = label;
      link.title = title;
    }
    document.title = `${label} · chatsite`;
  }

  function startRename() {
    if (!el.titleInput) return;
    el.titleInput.value = el.title.textContent.trim();
    el.title.hidden = true;
    el.titleInput.hidden = false;
    el.titleInput.focus();
    el.titleInput.select();
  }

  async function finishRename(save) {
    if (!el.titleInput || el.titleInput.hidden) return;
    const title = el.titleInput.value.trim();
    const before = el.title.textContent.trim();
    el.titleInput.hidden = true;
    el.title.hidden = false;
    el.renameButton.focus();
    if (!save || !title || title === before) return;
    applyTitle(title);
    try {
      const conversation = await api(cfg.conversationApiUrl, { method: "PATCH", body: { title } });
      applyTitle(conversation.title || title);
    } catch (err) {
      applyTitle(before);
      showError(err.message);
    }
  }

  function dialogError(dialog, message) {
    const box = dialog.querySelector(".form-errors");
    box.textContent = message || "";
    box.hidden = !message;
  }

  function openSettings() {
    const form = el.settings.querySelector("form");
    form.elements.model.value = cfg.model;
    form.elements.system_prompt.value = form.elements.system_prompt.defaultValue;
    dialogError(el.settings, "");
    el.settings.showModal();
  }

  async function saveSettings(form) {
    const model = form.elements.model.value.trim();
    if (!model) {
      dialogError(el.settings, "Choose a model.");
      form.elements.model.focus();
      return;
    }
    const submit = form.querySelector('[type="submit"]');
    submit.disabled = true;
    try {
      const conversation = await api(cfg.conversationApiUrl, {
        method: "PATCH",
        body: { model, system_prompt: form.elements.system_prompt.value },
      });
      cfg.model = conversation.model;
      root.dataset.model = conversation.model;
      form.elements.system_prompt.defaultValue = conversation.system_prompt;
      el.settings.close();
    } catch (err) {
      dialogError(el.settings, err.message);
    } finally {
      submit.disabled = false;
    }
  }

  async function deleteConversation(form) {
    const submit = form.querySelector('[type="submit"]');
    submit.disabled = true;
    try {
      await api(cfg.conversationApiUrl, { method: "DELETE" });
      state.leaving = true;
      closeSource();
      window.location.assign(cfg.homeUrl);
    } catch (err) {
      dialogError(el.deleteDialog, err.message);
      submit.disabled = false;
    }
  }

  // ---------------------------------------------------------------- sidebar

  const phone = window.matchMedia("(max-width: 760px)");

  function sidebarOpen() {
    return phone.matches
      ? root.classList.contains("is-sidebar-open")
      : !root.classList.contains("is-sidebar-collapsed");
  }

  function syncSidebar() {
    const open = sidebarOpen();
    el.sidebar.inert = !open;
    el.backdrop.hidden = !(phone.matches && open);
    el.sidebarToggle.setAttribute("aria-expanded", String(open));
    const label = open ? "Hide conversations" : "Show conversations";
    el.sidebarToggle.setAttribute("aria-label", label);
    el.sidebarToggle.title = label;
  }

  function setSidebar(open, { focus = false } = {}) {
    if (phone.matches) {
      root.classList.toggle("is-sidebar-open", open);
    } else {
      root.classList.toggle("is-sidebar-collapsed", !open);
      // A cookie, so the server renders the next page the same way (no flash).
      document.cookie = `${SIDEBAR_COOKIE}=${open ? "open" : "collapsed"}; path=/; max-age=31536000; samesite=lax`;
    }
    syncSidebar();
    if (!focus) return;
    if (open) {
      const target = el.sidebar.querySelector('[aria-current="page"]') || byTestId("new-conversation");
      target.focus();
    } else {
      el.sidebarToggle.focus();
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
  // Focus lands on Stop right after Enter sent: a held (repeating) Enter must not stop.
  el.stop.addEventListener("keydown", (event) => {
    if (event.repeat) event.preventDefault();
  });

  el.scroller.addEventListener(
    "scroll",
    () => {
      const atBottom = distanceFromBottom() < NEAR_BOTTOM_PX;
      // A smooth "jump to latest" passes through positions that are not the bottom yet.
      if (state.jumping && !atBottom) return;
      state.jumping = false;
      state.follow = atBottom;
      updateJump();
      maybeLoadOlder();
    },
    { passive: true },
  );
  for (const name of ["wheel", "touchstart", "keydown"]) {
    el.scroller.addEventListener(name, () => {
      state.jumping = false;
    }, { passive: true });
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-action]");
    if (!button || button.disabled) return;
    const bubble = button.closest('[data-testid="message"]');
    switch (button.dataset.action) {
      case "new-conversation":
        newConversation(button);
        break;
      case "copy-message":
        copyFrom(button, textOf(bubble));
        break;
      case "copy-code":
        copyFrom(button, button.closest(".code-block").querySelector("pre").textContent);
        break;
      case "regenerate":
      case "retry":
        regenerate(bubble);
        break;
      case "attempt-prev":
        showAttempt(bubble, -1);
        break;
      case "attempt-next":
        showAttempt(bubble, 1);
        break;
      case "jump-to-latest":
        state.follow = true;
        state.jumping = true;
        scrollToBottom("smooth");
        break;
      case "toggle-sidebar":
        setSidebar(!sidebarOpen(), { focus: true });
        break;
      case "close-sidebar":
        setSidebar(false);
        break;
      case "rename":
        startRename();
        break;
      case "open-settings":
        openSettings();
        break;
      case "delete":
        dialogError(el.deleteDialog, "");
        el.deleteDialog.showModal();
        break;
      case "close-dialog":
        button.closest("dialog").close();
        break;
      default:
        break;
    }
  });

  for (const dialog of [el.settings, el.deleteDialog]) {
    if (!dialog) continue;
    // A click on the backdrop (outside the form) closes the dialog.
    dialog.addEventListener("click", (event) => {
      if (event.target === dialog) dialog.close();
    });
  }
  if (el.settings) {
    el.settings.querySelector("form").addEventListener("submit", (event) => {
      event.preventDefault();
      saveSettings(event.target);
    });
  }
  if (el.deleteDialog) {
    el.deleteDialog.querySelector("form").addEventListener("submit", (event) => {
      event.preventDefault();
      deleteConversation(event.target);
    });
  }

  if (el.titleInput) {
    el.titleInput.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        finishRename(true);
      } else if (event.key === "Escape") {
        event.preventDefault();
        finishRename(false);
      }
    });
    el.titleInput.addEventListener("blur", () => finishRename(true));
  }

  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || event.defaultPrevented) return;
    if (document.querySelector("dialog[open]")) return; // the dialog closes itself
    if (phone.matches && sidebarOpen()) {
      event.preventDefault();
      setSidebar(false, { focus: true });
      return;
    }
    if (activeAssistant()) {
      event.preventDefault();
      cancelActive();
    }
  });

  phone.addEventListener("change", syncSidebar);

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

  // Server-rendered history: highlight its code blocks and give them copy buttons.
  for (const bubble of allBubbles()) {
    if (!isAssistant(bubble)) continue;
    bubble.dataset.model = cfg.model || "";
    if (bubble.dataset.status === "streaming") renderNow(bubble);
    else markdown.decorateCodeBlocks(bodyOf(bubble));
  }
  syncSidebar();
  scrollToBottom();
  updateUi();
  updateJump();
  maybeLoadOlder();
  if (cfg.page === "conversation") connect();
  if (!phone.matches) {
    // Opened mid-answer: Stop is the thing to reach; the composer gets focus afterwards.
    if (!el.input.disabled) el.input.focus();
    else if (activeAssistant()) {
      state.refocus = true;
      el.stop.focus();
    }
  }
})();
