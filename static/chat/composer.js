// chatsite page script, the composer: the message box (grows with its text), Send, Stop,
// Regenerate/Retry, the paused state once today's token budget is spent, and the error line
// under the composer. `updateUi` keeps every control in line with the state (other modules
// reach it as hooks.updateUi).
//
// Keyboard: Enter sends, Shift+Enter adds a line, Escape stops the answer (or closes the
// sidebar on a phone); while an answer streams, focus moves from the composer to Stop.

import {
  api,
  cancelUrl,
  conversationApiUrlFor,
  conversationPageUrl,
  messagesUrlFor,
  regenerateUrl,
} from "./api.js";
import { refreshBranches, showBranchOf, shownParentId } from "./branches.js";
import { refreshEditors } from "./edit.js";
import {
  activeAssistant,
  announceEnd,
  applyFinal,
  createBubble,
  findBubble,
  insertBubble,
  refreshControls,
  scrollToBottom,
  showNewExchange,
  syncHistory,
} from "./messages.js";
import { ACTIVE, BUDGET_EXHAUSTED, cfg, el, FINAL, state } from "./page.js";
import { touchSidebar } from "./sidebar.js";
import { renderStatus } from "./stream.js";

// ---------------------------------------------------------------- UI state

function focusIsLost() {
  const focused = document.activeElement;
  return !focused || focused === document.body || focused === el.stop || focused === el.input;
}

export function updateUi() {
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
  refreshBranches();
  refreshControls(busy);
  refreshEditors(busy);
  renderStatus();
}

export function showError(message, kind = "") {
  el.error.textContent = message;
  el.error.dataset.kind = kind;
  el.error.hidden = false;
}

export function hideError() {
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

export function autosize() {
  el.input.style.height = "auto";
  el.input.style.height = `${el.input.scrollHeight}px`;
}

// ---------------------------------------------------------------- actions

// The home page's first send: the conversation is made with its first message (two requests),
// and a send the server refused takes its new conversation with it, so no empty conversation
// is left behind. After a network failure the send may have arrived: that conversation is
// kept and reused by the next try (the sidebar lists it only once it has a message).
async function startConversation(content) {
  // The home composer's model select picks the new conversation's model.
  const body = el.composerModel ? { model: el.composerModel.value } : {};
  state.createdConversation ||= await api(cfg.conversationsUrl, { method: "POST", body });
  const id = state.createdConversation.id;
  try {
    await api(messagesUrlFor(id), { method: "POST", body: { content } });
  } catch (err) {
    if (err.status) {
      state.createdConversation = null;
      await api(conversationApiUrlFor(id), { method: "DELETE" }).catch(() => {});
    }
    throw err;
  }
  window.location.assign(conversationPageUrl(id));
}

export async function sendMessage() {
  const content = el.input.value;
  if (!content.trim() || state.sending || state.paused || activeAssistant()) return;
  state.sending = true;
  hideError();
  updateUi();
  let navigating = false;
  try {
    if (cfg.page === "home") {
      await startConversation(content);
      navigating = true;
      return;
    }
    // The new message continues the branch the reader sees (by default the newest).
    const parent = shownParentId();
    const body = parent ? { content, parent } : { content };
    const data = await api(cfg.messagesUrl, { method: "POST", body });
    el.input.value = "";
    autosize();
    showNewExchange(data);
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

export async function cancelActive() {
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
export async function regenerate(bubble) {
  if (state.sending || state.paused || activeAssistant()) return;
  // Any answer can be regenerated; the page offers it on the one that ends the branch shown.
  const latest = bubble;
  if (!latest) return;
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
    showBranchOf(fresh);
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
