// chatsite page script, the conversation list in the sidebar: the server renders the API's
// first page (pinned conversations under "Pinned", then "Recent"); the next pages load from
// the API as the list is scrolled to its end (a "Load more" button if that does not fire,
// and to retry a failed load). Each row has a menu (Pin/Unpin, Archive/Unarchive), and the
// "Archived" switch at the bottom swaps the list for the archived conversations.
//
// The current conversation is always rendered (the server adds it when it is beyond the
// first page, marked data-out-of-order, and it moves to its place when its page loads).
// Archiving it keeps the reader on it: it only leaves the list.

import { api, conversationPageUrl } from "./api.js";
import { byTestId, cfg, root, SIDEBAR_LABEL_CHARS } from "./page.js";

const ROW = '[data-testid="conversation-row"]';

let sidebar;
let list; // the main list: pinned and recent
let archive; // the archived view
let menu; // the one row menu, moved into the row it is opened for
let toggle; // the "Archived" switch
let announcer;
const loading = new WeakSet(); // the "more" elements whose next page is being loaded

function localUrl(link) {
  if (!link) return "";
  const url = new URL(link, window.location.href);
  return url.pathname + url.search;
}

function groupRows(name) {
  return list.querySelector(`[data-group="${name}"] [data-rows]`);
}

function say(text) {
  announcer.textContent = "";
  // A new text node each time, so the same words are read again.
  window.requestAnimationFrame(() => {
    announcer.textContent = text;
  });
}

// ---------------------------------------------------------------- rows

function truncate(label) {
  return label.length > SIDEBAR_LABEL_CHARS ? `${label.slice(0, SIDEBAR_LABEL_CHARS - 1)}…` : label;
}

function makeRow(item) {
  const template = document.getElementById("conversation-row-template");
  const row = template.content.firstElementChild.cloneNode(true);
  const link = row.querySelector('[data-testid="conversation-link"]');
  const label = item.title || "Untitled conversation";
  row.dataset.id = item.id;
  link.dataset.conversationId = item.id;
  link.href = conversationPageUrl(item.id);
  link.title = label;
  link.textContent = truncate(label);
  if (item.id === cfg.conversationId) {
    row.classList.add("is-active");
    link.classList.add("is-active");
    link.setAttribute("aria-current", "page");
  }
  setRowState(row, item);
  return row;
}

function setRowState(row, item) {
  row.dataset.pinned = String(Boolean(item.pinned));
  row.dataset.updatedAt = item.updated_at;
}

function updatedAt(row) {
  return Date.parse(row.dataset.updatedAt || "") || 0;
}

function syncGroups() {
  const pinned = list.querySelector('[data-group="pinned"]');
  pinned.hidden = !pinned.querySelector(ROW);
  const empty = byTestId("conversation-list-empty", list);
  if (empty) empty.hidden = Boolean(list.querySelector(ROW));
  const archivedEmpty = byTestId("archived-empty", archive);
  archivedEmpty.hidden = Boolean(archive.querySelector(ROW)) || !archive.dataset.loaded;
}

// Put `row` where the list's order (most recently updated first) says, among the rows
// loaded so far; past the last of them it waits, out of order, for its page.
function place(row, rows, moreElement) {
  const time = updatedAt(row);
  const after = [...rows.querySelectorAll(ROW)].find(
    (other) => other !== row && updatedAt(other) < time,
  );
  if (after) {
    rows.insertBefore(row, after);
    delete row.dataset.outOfOrder;
  } else {
    rows.append(row);
    if (moreElement && moreElement.dataset.nextUrl) row.dataset.outOfOrder = "";
    else delete row.dataset.outOfOrder;
  }
}

// The current conversation got a message: it is the most recent of its group now.
export function moveToTop(row) {
  if (!row || archive.contains(row)) return; // an archived one stays archived
  row.dataset.updatedAt = new Date().toISOString();
  const rows = groupRows(row.dataset.pinned === "true" ? "pinned" : "recent");
  rows.prepend(row);
  delete row.dataset.outOfOrder;
  syncGroups();
}

function appendPage(view, items) {
  for (const item of items) {
    let row = view.querySelector(`${ROW}[data-id="${CSS.escape(item.id)}"]`);
    if (row && row.dataset.outOfOrder === undefined) continue; // already listed (the pages shifted)
    if (row) setRowState(row, item);
    else row = makeRow(item);
    delete row.dataset.outOfOrder;
    const group = item.pinned ? "pinned" : "recent";
    const rows = view === archive ? archive.querySelector("[data-rows]") : groupRows(group);
    rows.append(row);
  }
  syncGroups();
}

// ---------------------------------------------------------------- pages

function moreOf(view) {
  return view.querySelector(".sidebar__more");
}

function isVisible(element, scroller) {
  if (element.hidden || scroller.hidden) return false;
  const box = element.getBoundingClientRect();
  const frame = scroller.getBoundingClientRect();
  return box.top < frame.bottom + 200 && box.bottom > frame.top;
}

async function loadMore(view) {
  const more = moreOf(view);
  const url = more.dataset.nextUrl;
  if (!url || loading.has(more)) return;
  loading.add(more);
  const status = more.querySelector(".sidebar__more-status");
  const button = more.querySelector("button");
  more.classList.add("is-loading");
  status.textContent = "Loading…";
  try {
    const page = await api(url);
    if (more.dataset.nextUrl !== url) return; // the view was reloaded meanwhile
    appendPage(view, page.results);
    more.dataset.nextUrl = localUrl(page.next);
    more.hidden = !more.dataset.nextUrl;
    status.textContent = "";
    button.textContent = "Load more";
  } catch {
    status.textContent = "Couldn't load more conversations.";
    button.textContent = "Try again";
  } finally {
    loading.delete(more);
    more.classList.remove("is-loading");
  }
  // Still at the end (a tall screen, a short page): keep going.
  if (!more.hidden && !status.textContent && isVisible(more, view)) loadMore(view);
}

function watchEnd(view) {
  const more = moreOf(view);
  if (!("IntersectionObserver" in window)) return; // the "Load more" button remains
  const failed = () => Boolean(more.querySelector(".sidebar__more-status").textContent);
  const observer = new IntersectionObserver(
    (entries) => {
      // After a failed load, "Try again" retries (not every scroll past the end).
      if (entries.some((entry) => entry.isIntersecting) && !failed()) loadMore(view);
    },
    { root: view, rootMargin: "0px 0px 200px 0px" },
  );
  observer.observe(more);
}

// ---------------------------------------------------------------- archived view

let archiveShown = false;

function showArchived(show) {
  archiveShown = show;
  list.hidden = show;
  archive.hidden = !show;
  toggle.querySelector("[data-label]").textContent = show ? "Back to conversations" : "Archived";
  toggle.setAttribute("aria-expanded", String(show));
  if (!show) return;
  // Fresh each time: conversations are archived and unarchived from the list meanwhile.
  archive.querySelector("[data-rows]").replaceChildren();
  delete archive.dataset.loaded;
  const more = moreOf(archive);
  more.dataset.nextUrl = archive.dataset.archivedUrl;
  more.hidden = false;
  more.querySelector(".sidebar__more-status").textContent = "";
  syncGroups();
  loadMore(archive).then(() => {
    archive.dataset.loaded = "true";
    syncGroups();
  });
}

// Search results take the place of the list (or the archived view) while a query is typed
// (search.js); then the view that was shown comes back.
export function setListsHidden(hidden) {
  closeMenu();
  list.hidden = hidden || archiveShown;
  archive.hidden = hidden || !archiveShown;
  toggle.parentElement.hidden = hidden;
}

// ---------------------------------------------------------------- row menu

function menuItems() {
  return [...menu.querySelectorAll('[role="menuitem"]')];
}

function openMenu(button) {
  const row = button.closest(ROW);
  if (!menu.hidden && menu.parentElement === row) {
    closeMenu({ focus: true });
    return;
  }
  closeMenu();
  const archived = Boolean(row.closest('[data-testid="archived-view"]'));
  menu.querySelector('[data-action="toggle-pin"] [data-label]').textContent =
    row.dataset.pinned === "true" ? "Unpin" : "Pin";
  menu.querySelector('[data-action="toggle-archive"] [data-label]').textContent = archived
    ? "Unarchive"
    : "Archive";
  row.append(menu);
  menu.hidden = false;
  button.setAttribute("aria-expanded", "true");
  menuItems()[0].focus();
}

function closeMenu({ focus = false } = {}) {
  if (menu.hidden) return;
  const button = menu.parentElement.querySelector('[data-action="conversation-menu"]');
  menu.hidden = true;
  if (button) {
    button.setAttribute("aria-expanded", "false");
    if (focus) button.focus();
  }
  sidebar.append(menu);
}

function onMenuKey(event) {
  const items = menuItems();
  const at = items.indexOf(document.activeElement);
  const moves = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: items.length - 1 };
  if (event.key in moves) {
    event.preventDefault();
    items[(moves[event.key] + items.length) % items.length].focus();
  } else if (event.key === "Escape") {
    event.preventDefault(); // not the page's Escape (closing the drawer, stopping an answer)
    closeMenu({ focus: true });
  } else if (event.key === "Tab") {
    closeMenu();
  }
}

// Where focus goes when a row leaves the view it is in: the next row, else the previous.
function focusNear(row) {
  const rows = [...row.closest(".sidebar__list").querySelectorAll(ROW)];
  const at = rows.indexOf(row);
  const next = rows[at + 1] || rows[at - 1];
  const target = next ? next.querySelector('[data-testid="conversation-link"]') : toggle;
  target.focus();
}

async function update(row, body) {
  const label = row.querySelector('[data-testid="conversation-link"]').title;
  const inArchive = Boolean(row.closest('[data-testid="archived-view"]'));
  closeMenu();
  let conversation;
  try {
    conversation = await api(conversationApiUrl(row.dataset.id), {
      method: "PATCH",
      body,
    });
  } catch (err) {
    say(`Couldn't change “${label}”: ${err.message}`);
    return;
  }
  const moving = conversation.archived !== inArchive;
  if (moving) focusNear(row);
  setRowState(row, conversation);
  if (conversation.archived) {
    // Archived: out of the list (the archived view shows it when next opened).
    if (!inArchive) row.remove();
    say(`Archived “${label}”.`);
  } else {
    place(row, groupRows(conversation.pinned ? "pinned" : "recent"), moreOf(list));
    if (moving) say(`Moved “${label}” back to the list.`);
    else say(conversation.pinned ? `Pinned “${label}”.` : `Unpinned “${label}”.`);
    if (!moving) row.querySelector('[data-action="conversation-menu"]').focus();
  }
  syncGroups();
}

function conversationApiUrl(id) {
  return `${cfg.conversationsUrl}${encodeURIComponent(id)}/`;
}

// ---------------------------------------------------------------- wiring

export function startConversationList() {
  sidebar = byTestId("sidebar", root);
  list = byTestId("conversation-list", sidebar);
  archive = byTestId("archived-view", sidebar);
  menu = byTestId("conversation-menu", sidebar);
  toggle = byTestId("archived-toggle", sidebar);
  announcer = byTestId("sidebar-announce", sidebar);
  if (!list || !archive || !menu) return;
  toggle.setAttribute("aria-expanded", "false");

  sidebar.addEventListener("click", (event) => {
    const button = event.target.closest("[data-action]");
    if (!button || button.disabled) return;
    const row = button.closest(ROW);
    switch (button.dataset.action) {
      case "conversation-menu":
        openMenu(button);
        break;
      case "toggle-pin":
        update(row, { pinned: row.dataset.pinned !== "true" });
        break;
      case "toggle-archive":
        update(row, { archived: !row.closest('[data-testid="archived-view"]') });
        break;
      case "toggle-archived":
        closeMenu();
        showArchived(!archiveShown);
        break;
      case "load-more-conversations":
        loadMore(button.closest(".sidebar__list"));
        break;
      default:
        break;
    }
  });
  menu.addEventListener("keydown", onMenuKey);
  document.addEventListener("click", (event) => {
    if (!menu.hidden && !menu.parentElement.contains(event.target)) closeMenu();
  });
  for (const view of [list, archive]) watchEnd(view);
  syncGroups();
}
