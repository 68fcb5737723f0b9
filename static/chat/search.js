// chatsite page script, searching conversations from the sidebar: Ctrl+K (Cmd+K on a Mac)
// focuses the search box (opening the drawer on a phone); typing searches titles and message
// text through the API (`?search=`, 250 ms after the last key, answers to older queries are
// dropped) and the results, each with the text around its match, take the list's place.
// ArrowDown/ArrowUp move between the box and the results, Enter in the box opens the first
// result, Escape clears the search (and, once empty, leaves the box to the page's Escape).

import { api, conversationPageUrl } from "./api.js";
import { byTestId, cfg, root } from "./page.js";
import { setListsHidden } from "./conversation-list.js";
import { setSidebar, sidebarOpen } from "./sidebar.js";

const DEBOUNCE_MS = 250;

let input;
let panel;
let results;
let status;
let more; // "More results": the next page of the results shown
let timer = 0;
let asked = 0; // the number of the latest query sent; older answers are ignored
let shownQuery = "";

// The words of `query` marked in `text`, built as DOM nodes (text stays text).
function highlighted(text, query) {
  const words = query
    .split(/\s+/)
    .map((word) => word.replace(/^[-"]+|"+$/g, ""))
    .filter((word) => word.length > 1 && word.toLowerCase() !== "or");
  const fragment = document.createDocumentFragment();
  if (!words.length) {
    fragment.append(text);
    return fragment;
  }
  const escaped = words.map((word) => word.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const pattern = new RegExp(`(${escaped.join("|")})`, "gi");
  text.split(pattern).forEach((part, index) => {
    if (index % 2 === 1) {
      const mark = document.createElement("mark");
      mark.textContent = part;
      fragment.append(mark);
    } else if (part) {
      fragment.append(part);
    }
  });
  return fragment;
}

function resultItem(item, query) {
  const li = document.createElement("li");
  const link = document.createElement("a");
  link.className = "search-result";
  link.href = conversationPageUrl(item.id);
  link.dataset.testid = "search-result";
  link.dataset.conversationId = item.id;
  if (item.id === cfg.conversationId) link.setAttribute("aria-current", "page");
  const title = document.createElement("span");
  title.className = "search-result__title";
  const label = document.createElement("span");
  label.append(highlighted(item.title || "Untitled conversation", query));
  title.append(label);
  if (item.archived) {
    const badge = document.createElement("span");
    badge.className = "search-result__badge";
    badge.textContent = "Archived";
    title.append(badge);
  }
  link.append(title);
  if (item.snippet) {
    const snippet = document.createElement("span");
    snippet.className = "search-result__snippet";
    snippet.dataset.testid = "search-snippet";
    snippet.append(highlighted(item.snippet, query));
    link.append(snippet);
  }
  li.append(link);
  return li;
}

function show(searching) {
  panel.hidden = !searching;
  setListsHidden(searching);
}

function clear() {
  clearTimeout(timer);
  asked += 1; // an answer still on its way is for a search that is over
  shownQuery = "";
  input.value = "";
  results.replaceChildren();
  status.textContent = "";
  more.hidden = true;
  show(false);
}

function localUrl(link) {
  const url = new URL(link, window.location.href);
  return url.pathname + url.search;
}

// The first page of results for `query` (or, with `next`, the page after those shown).
async function search(query, next = "") {
  const number = next ? asked : ++asked;
  let url = next;
  if (!url) {
    status.textContent = "Searching…";
    const target = new URL(cfg.conversationsUrl, window.location.href);
    target.searchParams.set("search", query);
    url = target.pathname + target.search;
  }
  more.hidden = true;
  let page;
  try {
    page = await api(url);
  } catch (err) {
    if (number === asked) status.textContent = err.message;
    return;
  }
  if (number !== asked) return; // a newer query was typed meanwhile
  shownQuery = query;
  const items = page.results.map((item) => resultItem(item, query));
  if (next) results.append(...items);
  else results.replaceChildren(...items);
  more.dataset.nextUrl = page.next ? localUrl(page.next) : "";
  more.hidden = !page.next;
  if (!page.count) status.textContent = `No conversations match “${query}”.`;
  else status.textContent = page.count === 1 ? "1 conversation" : `${page.count} conversations`;
}

function onInput() {
  clearTimeout(timer);
  const query = input.value.trim();
  if (!query) {
    clear();
    return;
  }
  show(true);
  if (query === shownQuery) return;
  timer = setTimeout(() => search(query), DEBOUNCE_MS);
}

function links() {
  return [...results.querySelectorAll('[data-testid="search-result"]')];
}

function onKey(event) {
  if (event.key === "Escape" && input.value) {
    event.preventDefault(); // not the page's Escape (closing the drawer, stopping an answer)
    clear();
  } else if (event.key === "ArrowDown" && links().length) {
    event.preventDefault();
    links()[0].focus();
  } else if (event.key === "Enter") {
    event.preventDefault();
    openFirst();
  }
}

// Enter opens the best result for what the box holds (searching first if the results shown
// are for an earlier query).
async function openFirst() {
  const query = input.value.trim();
  if (!query) return;
  if (query !== shownQuery) {
    clearTimeout(timer);
    show(true);
    await search(query);
    if (input.value.trim() !== query) return;
  }
  const first = links()[0];
  if (first) first.click();
}

function onResultKey(event) {
  const all = links();
  const at = all.indexOf(document.activeElement);
  if (at < 0) return;
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    const next = at + (event.key === "ArrowDown" ? 1 : -1);
    if (next < 0) input.focus();
    else all[Math.min(next, all.length - 1)].focus();
  } else if (event.key === "Escape") {
    event.preventDefault();
    input.focus();
  }
}

export function focusSearch(frames = 20) {
  if (!sidebarOpen()) setSidebar(true);
  input.focus();
  if (document.activeElement === input) {
    input.select();
  } else if (frames > 0) {
    // The phone's drawer is still hidden in the frame it starts to slide in (its
    // visibility is part of the transition): try again in the next one.
    window.requestAnimationFrame(() => focusSearch(frames - 1));
  }
}

export function startSearch() {
  input = byTestId("conversation-search", root);
  panel = byTestId("search-results", root);
  if (!input || !panel) return;
  results = panel.querySelector("[data-search-list]");
  status = byTestId("search-status", panel);
  more = byTestId("search-more", panel);
  more.addEventListener("click", () => search(shownQuery, more.dataset.nextUrl));
  const mac = /Mac|iPhone|iPad/.test(navigator.platform || navigator.userAgent);
  const hint = byTestId("search-shortcut", root);
  if (hint && mac) hint.textContent = "⌘K";
  input.addEventListener("input", onInput);
  input.addEventListener("keydown", onKey);
  results.addEventListener("keydown", onResultKey);
  document.addEventListener("keydown", (event) => {
    // The K key, also on a layout that types another letter there (Cyrillic, Greek…).
    const k = event.key.toLowerCase() === "k" || event.code === "KeyK";
    if (!k || !(event.ctrlKey || event.metaKey)) return;
    if (event.altKey || event.shiftKey || document.querySelector("dialog[open]")) return;
    event.preventDefault();
    focusSearch();
  });
}
