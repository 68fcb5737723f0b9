// chatsite page script, editing a sent message: Edit turns a user message's bubble into a
// text box with Send and Cancel (Enter sends, Shift+Enter adds a line, Escape cancels).
// Sending stores the new text as a new branch from that turn (POST /messages/{id}/edit/);
// its answer streams in like a send's, and the page shows the new branch. Not while an
// answer is being written (Send is off then, as the composer's is).

import { api, editUrl } from "./api.js";
import {
  activeAssistant,
  bodyOf,
  showNewExchange,
  syncHistory,
  textOf,
} from "./messages.js";
import { el, hooks, state } from "./page.js";

const editorOf = (bubble) => bubble.querySelector('[data-testid="edit-form"]');

function button(text, testId, className, type = "button") {
  const made = document.createElement("button");
  made.type = type;
  made.className = className;
  made.dataset.testid = testId;
  made.textContent = text;
  return made;
}

export function startEdit(bubble) {
  if (!bubble || editorOf(bubble)) return;
  for (const open of el.thread.querySelectorAll(".message--editing")) stopEdit(open);
  const form = document.createElement("form");
  form.className = "message-edit";
  form.dataset.testid = "edit-form";
  const input = document.createElement("textarea");
  input.className = "message-edit__input";
  input.dataset.testid = "edit-input";
  input.rows = 3;
  input.setAttribute("aria-label", "Edit your message");
  input.value = textOf(bubble);
  const actions = document.createElement("div");
  actions.className = "message-edit__actions";
  const cancel = button("Cancel", "edit-cancel", "btn btn--ghost btn--small");
  const send = button("Send", "edit-send", "btn btn--primary btn--small", "submit");
  actions.append(cancel, send);
  form.append(input, actions);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitEdit(bubble);
  });
  cancel.addEventListener("click", () => stopEdit(bubble, { focus: true }));
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault(); // not the page's Escape (which stops a streaming answer)
      stopEdit(bubble, { focus: true });
    } else if (event.key === "Enter" && !(event.shiftKey || event.altKey || event.ctrlKey)) {
      if (event.metaKey || event.isComposing || event.keyCode === 229) return; // IME confirming
      event.preventDefault();
      submitEdit(bubble);
    }
  });
  bodyOf(bubble).after(form);
  bubble.classList.add("message--editing");
  refreshEditors();
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
}

export function stopEdit(bubble, { focus = false } = {}) {
  const form = editorOf(bubble);
  if (form) form.remove();
  bubble.classList.remove("message--editing");
  if (focus) bubble.querySelector('[data-action="edit-message"]').focus();
}

async function submitEdit(bubble) {
  const form = editorOf(bubble);
  const content = form.querySelector("textarea").value;
  if (!content.trim() || state.sending || state.paused || activeAssistant()) return;
  state.sending = true;
  hooks.hideError();
  hooks.updateUi();
  try {
    const url = editUrl(bubble.dataset.messageId);
    const data = await api(url, { method: "POST", body: { content } });
    stopEdit(bubble);
    showNewExchange(data);
  } catch (err) {
    hooks.showError(err.message);
    if (err.status === 409) syncHistory();
  } finally {
    state.sending = false;
    hooks.updateUi();
  }
}

// Edit and the edit box's Send are off while an answer is being written (or sent).
export function refreshEditors(busy = state.sending || Boolean(activeAssistant())) {
  for (const edit of el.thread.querySelectorAll('[data-action="edit-message"]')) {
    edit.disabled = busy || state.paused;
  }
  for (const send of el.thread.querySelectorAll('[data-testid="edit-send"]')) {
    send.disabled = busy || state.paused;
  }
}
