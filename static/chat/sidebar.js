// chatsite page script, the sidebar: the conversation list (the current conversation's row
// moves to the top of its group and takes its first line as a label when it gets a message;
// paging, pin and archive are conversation-list.js's, search is search.js's), "New
// conversation", and opening/closing the sidebar: collapsed on a wide screen (remembered in
// a cookie, so the server renders the next page the same way) or an overlay on a phone.

import { moveToTop } from "./conversation-list.js";
import { byTestId, cfg, el, root, SIDEBAR_COOKIE, SIDEBAR_LABEL_CHARS } from "./page.js";

// ---------------------------------------------------------------- conversation list

export function labelFor(content) {
  const line = content.trim().split("\n")[0];
  return line.length > SIDEBAR_LABEL_CHARS ? `${line.slice(0, SIDEBAR_LABEL_CHARS - 1)}…` : line;
}

export function currentSidebarLink() {
  return document.querySelector(
    `[data-testid="conversation-link"][data-conversation-id="${CSS.escape(cfg.conversationId)}"]`,
  );
}

// The current conversation just got a message: it is now the most recent one.
export function touchSidebar(content) {
  const link = currentSidebarLink();
  if (!link) return;
  if (link.textContent.trim() === "Untitled conversation") link.textContent = labelFor(content);
  if (el.title && el.title.textContent.trim() === "New conversation") {
    el.title.textContent = labelFor(content);
  }
  moveToTop(link.closest('[data-testid="conversation-row"]'));
}

// "New conversation" makes nothing: it is the home page's empty composer, whose first send
// makes the conversation with its message (composer.js), so clicks never leave empty
// "Untitled conversation"s behind. On the home page it is the composer that gets focus.
export function newConversation() {
  if (cfg.page !== "home") {
    window.location.assign(cfg.homeUrl);
    return;
  }
  if (phone.matches && sidebarOpen()) setSidebar(false);
  el.input.focus();
}

// ---------------------------------------------------------------- sidebar

export const phone = window.matchMedia("(max-width: 760px)");

export function sidebarOpen() {
  return phone.matches
    ? root.classList.contains("is-sidebar-open")
    : !root.classList.contains("is-sidebar-collapsed");
}

export function syncSidebar() {
  const open = sidebarOpen();
  el.sidebar.inert = !open;
  el.backdrop.hidden = !(phone.matches && open);
  el.sidebarToggle.setAttribute("aria-expanded", String(open));
  const label = open ? "Hide conversations" : "Show conversations";
  el.sidebarToggle.setAttribute("aria-label", label);
  el.sidebarToggle.title = label;
}

export function setSidebar(open, { focus = false } = {}) {
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
