// chatsite page script, messages: the thread's bubbles and everything shown in them.
//
// Each message keeps its raw text in a <template data-testid="message-source">; assistant
// text is rendered as markdown (static/chat/markdown.js) at most once per animation frame.
// A finished answer loaded from the API is shown as the server rendered it (its `html`,
// sanitized there with the same rules, and again here by DOMPurify), like the history the
// page came with.
//
// Regenerating keeps earlier answers to the same user turn, and editing keeps the earlier
// user message: one of each is shown, with an "‹ n / m ›" switcher (static/chat/branches.js).
//
// History: the page comes with the latest turns; scrolling near the top loads older ones
// from the messages API (newest-first cursor pages), whole turns at a time, keeping the
// reader's place, until there are none left. `syncHistory` brings the page in line with the
// database after a (re)connection or a conflict.
//
// Scrolling follows the answer while the reader is at the bottom ("Jump to latest"
// otherwise); screen readers get the answer from a polite live region.

import { api } from "./api.js";
import { showBranchOf, shownTip, showSibling } from "./branches.js";
import {
  ACTIVE,
  cfg,
  el,
  FINAL,
  hooks,
  markdown,
  MAX_SYNC_PAGES,
  modelLabel,
  NEAR_BOTTOM_PX,
  NEAR_TOP_PX,
  OLDER_RETRY_MS,
  RETRYABLE,
  state,
} from "./page.js";
import { setTime } from "./times.js";

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

export function allBubbles() {
  return el.thread.querySelectorAll('[data-testid="message"]');
}

export function findBubble(id) {
  if (!id) return null;
  return el.thread.querySelector(`[data-testid="message"][data-message-id="${CSS.escape(id)}"]`);
}

export const bodyOf = (bubble) => bubble.querySelector('[data-testid="message-body"]');
const sourceOf = (bubble) => bubble.querySelector('[data-testid="message-source"]').content;
const control = (bubble, action) => bubble.querySelector(`[data-action="${action}"]`);
export const isAssistant = (bubble) => bubble.dataset.role === "assistant";

export function textOf(bubble) {
  return sourceOf(bubble).textContent;
}

function hasText(bubble) {
  for (const node of sourceOf(bubble).childNodes) if (node.data) return true;
  return false;
}

export function setText(bubble, text) {
  sourceOf(bubble).replaceChildren(document.createTextNode(text || ""));
  bubble.serverHtml = null; // the server's HTML, if any, was for other text
  scheduleRender(bubble);
}

export function appendText(bubble, text) {
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

export function renderNow(bubble) {
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

export function setStatus(bubble, status, errorMessage) {
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

function span(className, testId, text) {
  const node = document.createElement("span");
  node.className = className;
  node.dataset.testid = testId;
  node.textContent = text;
  return node;
}

// An answer's meta line, as templates/chat/_message.html renders it: the label of the model
// that produced it, then (once it ended) its usage, "~" marking estimates (an answer that
// ended before the model reported its usage).
export function setMeta(bubble) {
  const meta = bubble.querySelector('[data-testid="message-meta"]');
  meta.replaceChildren();
  meta.removeAttribute("title");
  if (!isAssistant(bubble)) return;
  const label = modelLabel(bubble.dataset.model);
  meta.append(span("message__model", "message-model", label));
  const { inputTokens, outputTokens, usageEstimated } = bubble.dataset;
  if (ACTIVE.has(bubble.dataset.status) || !inputTokens) return;
  const mark = usageEstimated === "true" ? "~" : "";
  let usage = `${label ? " · " : ""}${mark}${inputTokens} in`;
  if (outputTokens) usage += ` · ${mark}${outputTokens} out`;
  meta.append(span("message__usage", "message-usage", usage));
  if (mark) {
    meta.title = "Token counts are estimates: the answer ended before the model reported its usage.";
  }
}

// The conversation's token total in the header ("1,234 tokens"; the tooltip splits input and
// output), read again from the API shortly after answers end: the server's sum counts every
// answer once, however often the stream repeats an end.
let usageTimer = 0;
export function refreshConversationUsage() {
  if (!el.usage || !cfg.conversationApiUrl) return;
  clearTimeout(usageTimer);
  usageTimer = setTimeout(async () => {
    try {
      const conversation = await api(cfg.conversationApiUrl);
      showConversationUsage(conversation.input_tokens, conversation.output_tokens);
    } catch {
      // The total is informational: the next answer's end tries again.
    }
  }, 150);
}

function showConversationUsage(inputTokens, outputTokens) {
  const format = (n) => Number(n || 0).toLocaleString("en-US");
  el.usage.dataset.inputTokens = String(inputTokens);
  el.usage.dataset.outputTokens = String(outputTokens);
  el.usage.title = `${format(inputTokens)} in · ${format(outputTokens)} out`;
  el.usage.querySelector("[data-usage-total]").textContent = format(
    Number(inputTokens || 0) + Number(outputTokens || 0),
  );
}

// Earlier exchanges left out of what the model was sent (the conversation is longer than
// its context window): said above the answer, from the API or the stream's message_start.
export function setContextNote(bubble, omitted) {
  const count = Number(omitted) || 0;
  bubble.dataset.contextOmittedTurns = String(count);
  const note = bubble.querySelector('[data-testid="context-note"]');
  const what = count === 1 ? "exchange" : `${count} exchanges`;
  note.textContent = count
    ? `Claude was not sent the first ${what} of this conversation: the whole conversation is longer than its context window.`
    : "";
  note.hidden = !count;
}

export function setUsage(bubble, inputTokens, outputTokens, estimated) {
  if (inputTokens != null) bubble.dataset.inputTokens = inputTokens;
  if (outputTokens != null) bubble.dataset.outputTokens = outputTokens;
  if (estimated != null) bubble.dataset.usageEstimated = estimated ? "true" : "";
}

export function createBubble(message) {
  const bubble = el.template.content.firstElementChild.cloneNode(true);
  const role = message.role === "user" ? "user" : "assistant";
  bubble.classList.add(`message--${role}`);
  bubble.dataset.messageId = message.id;
  bubble.dataset.role = role;
  bubble.dataset.replyTo = (role === "assistant" && message.reply_to) || "";
  bubble.dataset.parent = (role === "user" && message.parent) || "";
  // The model that produced the answer (the API's and message_start's `model`).
  bubble.dataset.model = (role === "assistant" && message.model) || "";
  bubble.querySelector(".message__role").textContent = role === "user" ? "You" : "Claude";
  if (role === "user") bodyOf(bubble).classList.remove("markdown");
  setUsage(bubble, message.input_tokens, message.output_tokens, message.usage_estimated);
  // A streamed answer's time comes with its message_start.
  setTime(bubble, message.created_at);
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

export function insertBubble(bubble, before = null) {
  removeEmptyState();
  if (before) before.before(bubble);
  else el.thread.append(bubble);
}

export function activeAssistant() {
  return el.thread.querySelector(
    '[data-role="assistant"][data-status="pending"], [data-role="assistant"][data-status="streaming"]',
  );
}

// A bubble the database says is finished: take its final text, status and usage.
export function applyFinal(bubble, message) {
  if (ACTIVE.has(bubble.dataset.status)) refreshConversationUsage();
  if (message.model) bubble.dataset.model = message.model;
  setUsage(bubble, message.input_tokens, message.output_tokens, message.usage_estimated);
  setStatus(bubble, message.status, message.error_message || message.error_code || "");
  setText(bubble, message.content);
  bubble.serverHtml = message.html ?? null;
  renderNow(bubble);
  setMeta(bubble);
}

// ---------------------------------------------------------------- attempts

// Regenerations of an answer and edits of a user message: the page shows one of each with
// an "n / m" switcher, and below it one path (static/chat/branches.js decides which).
export function showAttempt(bubble, step) {
  const target = showSibling(bubble, step);
  if (!target) return;
  hooks.updateUi();
  // The clicked button just disappeared with its bubble: keep focus on the switcher.
  const same = control(target, step < 0 ? "attempt-prev" : "attempt-next");
  (same.disabled ? control(target, step < 0 ? "attempt-next" : "attempt-prev") : same).focus();
}

// Only the answer that ends the branch shown can be regenerated (or retried), when idle.
export function refreshControls(busy) {
  const bubbles = allBubbles();
  const last = shownTip();
  for (const bubble of bubbles) {
    control(bubble, "regenerate").hidden = true;
    control(bubble, "retry").hidden = true;
    control(bubble, "copy-message").hidden =
      !hasText(bubble) || (isAssistant(bubble) && ACTIVE.has(bubble.dataset.status));
  }
  if (!last || !isAssistant(last) || busy || !FINAL.has(last.dataset.status)) return;
  const retry = RETRYABLE.has(last.dataset.status);
  const button = control(last, retry ? "retry" : "regenerate");
  button.hidden = false;
  button.disabled = state.paused;
}

// ---------------------------------------------------------------- scrolling

export function distanceFromBottom() {
  const s = el.scroller;
  return s.scrollHeight - s.scrollTop - s.clientHeight;
}

export function scrollToBottom(behavior = "instant") {
  el.scroller.scrollTo({ top: el.scroller.scrollHeight, behavior });
}

export function updateJump() {
  el.jump.hidden = distanceFromBottom() < NEAR_BOTTOM_PX;
}

// Follow the answer only if the reader is at the bottom (`state.follow`, kept by scrolling).
export function keepingScroll(mutate) {
  mutate();
  if (state.follow) scrollToBottom();
  updateJump();
}

// What a send or an edit answered (`{user_message, assistant_message}`): both bubbles, on
// the branch shown, followed to the bottom.
export function showNewExchange(data) {
  state.follow = true;
  keepingScroll(() => {
    let assistant = findBubble(data.assistant_message.id);
    // The stream may have announced the answer first; it then keeps its newer state.
    if (!findBubble(data.user_message.id)) {
      insertBubble(createBubble(data.user_message), assistant);
    }
    if (!assistant) {
      assistant = createBubble(data.assistant_message);
      insertBubble(assistant);
    } else assistant.dataset.replyTo = data.user_message.id;
    showBranchOf(assistant);
  });
  scrollToBottom();
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

export function announceEnd(bubble) {
  announceProgress(bubble, true);
  const status = bubble.dataset.status;
  if (status !== "complete") {
    const label = statusLabel(status, bubble.dataset.errorMessage);
    el.live.textContent = `${el.live.textContent} (Answer ${label}.)`.trim();
  }
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
export async function syncHistory() {
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
          if (message.role === "user") bubble.dataset.parent = message.parent || "";
          previous = bubble;
        }
      });
    } while (state.syncAgain);
  } catch {
    // Best effort: the stream stays the source of live text.
  } finally {
    state.syncing = false;
    hooks.updateUi();
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
    hooks.updateUi(); // groups the loaded answers with their attempts
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
export function maybeLoadOlder() {
  if (!state.olderUrl || state.loadingOlder || Date.now() < state.olderRetryAt) return;
  if (el.scroller.scrollTop < NEAR_TOP_PX) loadOlder();
}

export async function copyFrom(button, text) {
  markdown.flashCopied(button, await markdown.copyText(text));
}
