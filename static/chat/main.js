// chatsite page script, entry point: send messages through the JSON API and render answers
// from the conversation's long-lived SSE stream. Plain JS modules, no build step, no inline
// code (strict CSP: script-src 'self' allows same-origin modules). This module wires the
// others together and registers the page's listeners; the modules are
//   page.js      shared context: cfg (data- attributes), el, state, constants, hooks
//   api.js       HTTP: api(), ApiError, CSRF, Retry-After
//   stream.js    the stream client: tokens, EventSource, Last-Event-ID, back-off, offline
//   messages.js  bubbles, markdown rendering, attempts, history sync and older pages,
//                scrolling, the live region
//   composer.js  the composer: send, stop, regenerate, paused budget, errors, updateUi
//   branches.js  which branch of the conversation is shown (edits and regenerations)
//   edit.js      editing a sent message: the edit box, and the new branch it sends
//   sidebar.js   the sidebar and new conversations
//   conversation-list.js  the sidebar's list: pages on scroll, pinned, row menus, archived
//   search.js    searching conversations (Ctrl/Cmd+K)
//   dialogs.js   rename, conversation settings, delete
//   shortcuts.js keyboard shortcuts and the "Keyboard shortcuts" dialog (`?`)
//   menus.js     closing the header's <details> menus (Export)
//   times.js     message times in the reader's time zone
// static/chat/markdown.js stays a classic deferred script (see its header).

import {
  autosize,
  cancelActive,
  hideError,
  regenerate,
  sendMessage,
  showError,
  updateUi,
} from "./composer.js";
import {
  deleteConversation,
  dialogError,
  finishRename,
  openSettings,
  saveSettings,
  startRename,
} from "./dialogs.js";
import { watchMenus } from "./menus.js";
import {
  activeAssistant,
  allBubbles,
  bodyOf,
  copyFrom,
  distanceFromBottom,
  isAssistant,
  maybeLoadOlder,
  renderNow,
  scrollToBottom,
  showAttempt,
  textOf,
  updateJump,
} from "./messages.js";
import { startEdit } from "./edit.js";
import { cfg, el, hooks, markdown, NEAR_BOTTOM_PX, root, state } from "./page.js";
import { startConversationList } from "./conversation-list.js";
import { startSearch } from "./search.js";
import { installShortcuts } from "./shortcuts.js";
import { newConversation, phone, setSidebar, sidebarOpen, syncSidebar } from "./sidebar.js";
import { connect, watchConnectivity } from "./stream.js";
import { showTimes } from "./times.js";

function start() {
  // The calls other modules make back into the composer (see page.js).
  hooks.updateUi = updateUi;
  hooks.showError = showError;
  hooks.hideError = hideError;

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
        newConversation();
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
      case "edit-message":
        startEdit(bubble);
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

  watchConnectivity();
  startConversationList();
  startSearch();
  // Their keydown listeners capture: a key they handle never reaches the ones above.
  installShortcuts();
  watchMenus();
  showTimes();

  // Server-rendered history: highlight its code blocks and give them copy buttons.
  for (const bubble of allBubbles()) {
    if (!isAssistant(bubble)) continue;
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
}

if (root) start();
