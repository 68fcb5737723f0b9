// chatsite page script, shared page context: the page's configuration (`cfg`, from the
// data- attributes of [data-chat-root]), its elements (`el`), the one mutable `state` every
// module reads and writes, the constants, and small DOM helpers. Imports nothing, so every
// other module can import it.
//
// The page script is a set of ES modules (no build step, no inline code: the strict CSP's
// script-src 'self' allows same-origin modules); static/chat/main.js is the entry point.
// Modules import only "downwards" (page <- api <- messages <- stream <- composer, sidebar,
// dialogs <- main); the few calls that would go back up (e.g. messages and the stream
// refreshing the composer's controls) go through `hooks`, which main.js fills in.

export const root = document.querySelector("[data-chat-root]");

export const ACTIVE = new Set(["pending", "streaming"]);
export const FINAL = new Set(["complete", "cancelled", "failed", "interrupted"]);
export const RETRYABLE = new Set(["failed", "interrupted"]);
export const BUDGET_EXHAUSTED = "token_budget_exhausted";
export const BACKOFF_MIN_MS = 1000;
export const BACKOFF_MAX_MS = 30000;
export const NEAR_BOTTOM_PX = 80;
export const NEAR_TOP_PX = 400; // start loading older messages this close to the top
export const MAX_SYNC_PAGES = 100;
export const OLDER_RETRY_MS = 2000;
export const SIDEBAR_LABEL_CHARS = 60;
export const SIDEBAR_COOKIE = "chatsite_sidebar";
// static/chat/markdown.js (a classic deferred script: it runs before this deferred module
// graph) sets window.chatMarkdown; without it (a vendored library failed to load) answers
// are shown as plain text.
export const markdown = window.chatMarkdown || {
  render: (target, text) => {
    target.textContent = text;
  },
  decorateCodeBlocks: () => {},
  copyText: async () => false,
  flashCopied: () => {},
  renderHtml: null,
};

const data = root ? root.dataset : {};
export const cfg = {
  page: data.page,
  conversationId: data.conversationId,
  model: data.model,
  conversationsUrl: data.conversationsUrl,
  conversationApiUrl: data.conversationApiUrl,
  messagesUrl: data.messagesUrl,
  olderMessagesUrl: data.olderMessagesUrl,
  streamTokenUrl: data.streamTokenUrl,
  cancelUrlTemplate: data.cancelUrlTemplate,
  regenerateUrlTemplate: data.regenerateUrlTemplate,
  editUrlTemplate: data.editUrlTemplate,
  conversationUrlTemplate: data.conversationUrlTemplate,
  homeUrl: data.homeUrl,
  loginUrl: data.loginUrl,
  placeholderId: data.placeholderId,
};

export const byTestId = (id, scope = root) => scope.querySelector(`[data-testid="${id}"]`);

// The offered models' labels by id, from the server-rendered model selects (the settings
// dialog, the home composer). A model no longer offered (an old answer's) shows its id.
const modelLabels = new Map(
  Array.from(document.querySelectorAll("[data-model-select] option"), (o) => [o.value, o.text]),
);
export const modelLabel = (id) => modelLabels.get(id) || id || "";

function findElements() {
  return {
    thread: root.querySelector("[data-thread]"),
    scroller: byTestId("thread"),
    older: byTestId("older-messages"),
    form: byTestId("composer"),
    input: byTestId("composer-input"),
    send: byTestId("send-button"),
    stop: byTestId("stop-button"),
    error: byTestId("composer-error"),
    status: byTestId("stream-status"),
    statusText: root.querySelector(".status-line__text"),
    title: byTestId("conversation-title"),
    usage: byTestId("conversation-usage"),
    composerModel: byTestId("composer-model"),
    titleInput: byTestId("rename-input"),
    renameButton: byTestId("rename-conversation"),
    jump: byTestId("jump-to-latest"),
    sidebar: byTestId("sidebar"),
    backdrop: byTestId("sidebar-backdrop"),
    sidebarToggle: byTestId("sidebar-toggle"),
    live: byTestId("answer-live", document),
    settings: byTestId("conversation-settings", document),
    deleteDialog: byTestId("delete-dialog", document),
    template: document.getElementById("message-template"),
  };
}
export const el = root ? findElements() : {};

export const state = {
  conn: cfg.page === "conversation" ? "connecting" : "none",
  connDetail: "",
  source: null,
  lastEventId: "",
  failures: 0,
  retryTimer: null,
  everOpened: false,
  leaving: false,
  sending: false,
  cancelling: false,
  refocus: false,
  generation: 0,
  syncing: false,
  syncAgain: false,
  createdConversation: null,
  offline: navigator.onLine === false,
  follow: true,
  jumping: false,
  regeneratingFor: null, // the user turn a regenerate request is answering
  paused: false, // today's tokens are spent: sending waits for the budget to renew
  pauseTimer: null,
  branchTip: "", // the message whose branch the page shows (static/chat/branches.js)
  dirty: new Set(),
  frame: 0,
  spoken: new Map(), // message id -> characters already announced
  olderUrl: cfg.olderMessagesUrl || "", // the next page of older messages; "" once all are here
  loadingOlder: false,
  olderRetryAt: 0, // after a failed load, scrolling retries from this time on
};

// Late-bound calls to functions of modules that import the caller (main.js sets them), so no
// two modules import each other.
export const hooks = {
  updateUi: () => {}, // composer.js: controls, attempts, status line
  showError: () => {}, // composer.js: the error line under the composer
  hideError: () => {},
};
