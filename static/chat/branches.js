// chatsite page script, branches: which of the conversation's messages the page shows.
//
// Messages form a tree (chat/branches.py): a user message follows an answer (data-parent),
// an answer replies to a user message (data-reply-to). Several user messages with one parent
// are edits, several answers to one question are regenerations; at each such branch point
// the page shows one of them, with an "‹ n / m ›" switcher, and below it one path through
// its subtree.
//
// What is shown is kept as one message, the tip (`state.branchTip`): the path is the tip's
// ancestors, then below it the newest child at each step. The page starts at the newest
// message (the default branch, as the server rendered it); switching to a sibling moves the
// tip to the newest message below that sibling; the page's own send, edit and regenerate
// move it to their answer. Messages made elsewhere (another tab) change nothing the reader
// sees unless they continue the path being shown.
//
// The page holds a window of the history: a message whose parent is not loaded starts the
// path, as the window's first turn does. An answer the stream announced before the page
// knows its question stands on its own, shown, until a history sync places it.

import { el, state } from "./page.js";

const ROOT = "";

const idOf = (bubble) => bubble.dataset.messageId;
const linkOf = (bubble) =>
  (bubble.dataset.role === "user" ? bubble.dataset.parent : bubble.dataset.replyTo) || "";
const unplaced = (bubble) => bubble.dataset.role !== "user" && !bubble.dataset.replyTo;
const control = (bubble, action) => bubble.querySelector(`[data-action="${action}"]`);

// The loaded messages as a tree: each one's children (oldest first) by the id they hang
// under, and the newest message (as a position in the thread) below each.
function tree() {
  const all = [...el.thread.querySelectorAll('[data-testid="message"]')];
  const byId = new Map(all.map((bubble) => [idOf(bubble), bubble]));
  const children = new Map();
  const newest = new Map();
  all.forEach((bubble, index) => {
    newest.set(bubble, index);
    if (unplaced(bubble)) return;
    const link = byId.has(linkOf(bubble)) ? linkOf(bubble) : ROOT;
    if (!children.has(link)) children.set(link, []);
    children.get(link).push(bubble);
  });
  // Children come after their parent in the thread: one pass from the end carries each
  // subtree's newest position up to its root.
  for (let index = all.length - 1; index >= 0; index -= 1) {
    const bubble = all[index];
    const parent = unplaced(bubble) ? null : byId.get(linkOf(bubble));
    if (parent) newest.set(parent, Math.max(newest.get(parent), newest.get(bubble)));
  }
  return { all, byId, children, newest };
}

function newestChild(t, id) {
  const group = t.children.get(id) || [];
  let best = null;
  for (const child of group) if (!best || t.newest.get(child) > t.newest.get(best)) best = child;
  return best;
}

// The last message of the path through `bubble`'s subtree that holds its newest message.
function newestBelow(t, bubble) {
  let end = bubble;
  for (let next = newestChild(t, idOf(end)); next; next = newestChild(t, idOf(end))) end = next;
  return end;
}

const siblingsOf = (t, bubble) =>
  t.children.get(t.byId.has(linkOf(bubble)) ? linkOf(bubble) : ROOT) || [bubble];

// Show the path through the tip; give every placed message its switcher.
export function refreshBranches() {
  const t = tree();
  let tip = t.byId.get(state.branchTip);
  if (!tip || unplaced(tip)) tip = newestChild(t, ROOT); // the newest path, from the top
  const path = new Set();
  if (tip) {
    const end = newestBelow(t, tip);
    for (let b = end; b && !path.has(b); b = t.byId.get(linkOf(b))) path.add(b);
    state.branchTip = idOf(end);
  }
  for (const bubble of t.all) {
    const group = unplaced(bubble) ? [bubble] : siblingsOf(t, bubble);
    const index = group.indexOf(bubble);
    bubble.hidden = !unplaced(bubble) && !path.has(bubble);
    bubble.querySelector('[data-testid="attempts"]').hidden = group.length < 2;
    bubble.querySelector('[data-testid="attempt-counter"]').textContent =
      `${index + 1} / ${group.length}`;
    const what = bubble.dataset.role === "user" ? "version" : "answer";
    const prev = control(bubble, "attempt-prev");
    const next = control(bubble, "attempt-next");
    prev.setAttribute("aria-label", `Previous ${what}`);
    next.setAttribute("aria-label", `Next ${what}`);
    prev.disabled = index === 0;
    next.disabled = index === group.length - 1;
  }
}

// The switcher: show the sibling `step` away from `bubble`, and below it its newest path.
export function showSibling(bubble, step) {
  const t = tree();
  const group = siblingsOf(t, bubble);
  const target = group[group.indexOf(bubble) + step];
  if (!target) return null;
  state.branchTip = idOf(newestBelow(t, target));
  return target;
}

// Show the path that leads to `bubble` (the page's own new message or answer).
export function showBranchOf(bubble) {
  if (bubble) state.branchTip = idOf(bubble);
}

// The message that ends the path shown (what Regenerate acts on), or null.
export function shownTip() {
  const tip = el.thread.querySelector(
    `[data-testid="message"][data-message-id="${CSS.escape(state.branchTip || "")}"]`,
  );
  return tip && !tip.hidden ? tip : null;
}

// The answer a new message follows: the last answer on the path shown.
export function shownParentId() {
  const shown = [...el.thread.querySelectorAll('[data-testid="message"][data-role="assistant"]')]
    .filter((bubble) => !bubble.hidden && !unplaced(bubble));
  return shown.length ? idOf(shown[shown.length - 1]) : null;
}
