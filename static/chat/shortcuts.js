// chatsite page script, keyboard shortcuts and the "Keyboard shortcuts" dialog that lists
// them (templates/chat/chat.html; `?` or the header's keyboard button opens it).
//
//   Ctrl/⌘+Shift+O   new conversation (the home page's empty composer)
//   Ctrl/⌘+Shift+C   copy the last answer (its markdown, as the Copy button does)
//   Shift+Esc        focus the message box
//   ?                this list (not while typing in a text field)
// Enter, Shift+Enter and Esc belong to the composer (main.js, composer.js); Ctrl/⌘+K to
// the conversation search. Ctrl/⌘+Shift+C is also Chromium's and Firefox's "inspect
// element", but Chromium hands a page its keys first and keeps only tab and window keys
// (Ctrl+T, Ctrl+W, Ctrl+N…) for itself, so the page's preventDefault() wins; headless
// Chromium delivers all four combinations to the page (tests/browser/test_export_shortcuts.py).
//
// This module's keydown listener runs in the capture phase: a key it handles is
// preventDefault()ed, so the page's other listeners (Escape stops an answer) leave it alone.

import { allBubbles, isAssistant, textOf } from "./messages.js";
import { byTestId, el, markdown } from "./page.js";
import { newConversation } from "./sidebar.js";

// navigator.platform is deprecated but still the one value every browser fills in.
const isMac = /^(Mac|iPhone|iPad|iPod)/.test(navigator.platform || "");

const dialog = () => byTestId("shortcuts-dialog", document);

const TEXT_FIELDS = "input, textarea, select, [contenteditable]:not([contenteditable='false'])";

function inTextField(target) {
  return target instanceof Element && Boolean(target.closest(TEXT_FIELDS));
}

// The letter of a Ctrl/⌘ shortcut: the key's own letter, or on a keyboard whose layout
// types another script (Cyrillic, Greek…) the Latin letter of its position.
function letterOf(event) {
  if (/^[a-z]$/i.test(event.key)) return event.key.toLowerCase();
  const match = /^Key([A-Z])$/.exec(event.code || "");
  return match ? match[1].toLowerCase() : "";
}

export function openShortcuts() {
  const shortcuts = dialog();
  if (shortcuts && !shortcuts.open) shortcuts.showModal();
}

function announce(text) {
  if (!el.live) return;
  el.live.textContent = "";
  // A fresh text node, so a screen reader announces the same words again.
  requestAnimationFrame(() => {
    el.live.textContent = text;
  });
}

async function copyLastAnswer() {
  const answers = [...allBubbles()].filter((bubble) => isAssistant(bubble) && !bubble.hidden);
  const last = answers[answers.length - 1];
  const text = last ? textOf(last) : "";
  if (!text) {
    announce("There is no answer to copy yet.");
    return;
  }
  const copied = await markdown.copyText(text);
  const button = last.querySelector('[data-action="copy-message"]');
  if (button) markdown.flashCopied(button, copied);
  announce(copied ? "Copied the last answer." : "Could not copy the answer.");
}

function onKeydown(event) {
  if (event.defaultPrevented || event.isComposing) return;
  const modifier = isMac ? event.metaKey : event.ctrlKey;
  if (modifier && event.shiftKey && !event.altKey) {
    const letter = letterOf(event);
    if (letter === "o") {
      event.preventDefault();
      newConversation();
    } else if (letter === "c") {
      event.preventDefault();
      copyLastAnswer();
    }
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key === "Escape" && event.shiftKey) {
    if (document.querySelector("dialog[open]")) return; // the dialog closes itself
    event.preventDefault(); // never "stop the answer", which is plain Esc
    if (el.input && !el.input.disabled) el.input.focus();
    return;
  }
  if (event.key === "?" && !inTextField(event.target) && !document.querySelector("dialog[open]")) {
    event.preventDefault();
    openShortcuts();
  }
}

export function installShortcuts() {
  if (isMac) {
    for (const key of document.querySelectorAll("kbd[data-mod]")) key.textContent = "⌘";
  }
  document.addEventListener("keydown", onKeydown, true);
  document.addEventListener("click", (event) => {
    if (event.target.closest('[data-action="open-shortcuts"]')) openShortcuts();
  });
  const shortcuts = dialog();
  if (shortcuts) {
    // A click on the backdrop (outside the form) closes it, as the other dialogs do.
    shortcuts.addEventListener("click", (event) => {
      if (event.target === shortcuts) shortcuts.close();
    });
  }
}
