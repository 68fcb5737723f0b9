// chatsite page script, dialogs: renaming the conversation in place (its title becomes an
// input: Enter or leaving it saves, Escape cancels), the conversation settings dialog (model
// and system prompt) and the delete dialog. A click on a dialog's backdrop closes it.

import { api } from "./api.js";
import { showError } from "./composer.js";
import { cfg, el, root, state } from "./page.js";
import { currentSidebarLink, labelFor } from "./sidebar.js";
import { closeSource } from "./stream.js";

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

export function startRename() {
  if (!el.titleInput) return;
  el.titleInput.value = el.title.textContent.trim();
  el.title.hidden = true;
  el.titleInput.hidden = false;
  el.titleInput.focus();
  el.titleInput.select();
}

export async function finishRename(save) {
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

export function dialogError(dialog, message) {
  const box = dialog.querySelector(".form-errors");
  box.textContent = message || "";
  box.hidden = !message;
}

export function openSettings() {
  const form = el.settings.querySelector("form");
  const select = form.elements.model;
  select.value = cfg.model;
  if (select.value !== cfg.model) {
    // Not offered any more: the model that answers the conversation now (the server's pick).
    for (const option of select.options) option.selected = option.defaultSelected;
  }
  form.elements.system_prompt.value = form.elements.system_prompt.defaultValue;
  dialogError(el.settings, "");
  el.settings.showModal();
}

export async function saveSettings(form) {
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

export async function deleteConversation(form) {
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
