// A chatsite API client for the browser: fetch for the API, EventSource for the stream.
//
// The contract it follows: docs/api.md (the API) and docs/streaming.md (the stream).
// index.html + demo.js show it in use. It needs no build step and no library.
//
// chatsite sends no CORS headers, so a page using this module must be served from the
// site's own origin (behind the same host or reverse proxy as the API); see README.md.

/** An API error: every error response has the body {"code", "message"}. */
export class ApiError extends Error {
  constructor(status, body) {
    super(`${status} ${body.code}: ${body.message}`);
    this.status = status;
    this.code = body.code;
    this.body = body;
  }
}

export class ChatClient {
  /**
   * @param {string} baseUrl the site, e.g. "https://chat.example.com" ("" for this origin)
   * @param {object} [options]
   * @param {typeof EventSource} [options.EventSource] an implementation, where there is
   *   no global one (Node 20 has fetch but no EventSource)
   */
  constructor(baseUrl = "", { EventSource: EventSourceImpl = globalThis.EventSource } = {}) {
    this.baseUrl = baseUrl.replace(/\/$/, "");
    this.EventSource = EventSourceImpl;
    this.access = null;
    this.refreshToken = null;
  }

  /** Log in for a JWT pair: an access token (15 minutes) and a refresh token (a day). */
  async logIn(username, password) {
    const tokens = await this.request("POST", "/api/v1/auth/token/", { username, password });
    this.access = tokens.access;
    this.refreshToken = tokens.refresh;
  }

  /** A new access token. Each refresh token works once: the answer carries the next. */
  async refresh() {
    const tokens = await this.request("POST", "/api/v1/auth/token/refresh/", {
      refresh: this.refreshToken,
    });
    this.access = tokens.access;
    this.refreshToken = tokens.refresh;
  }

  /** One API call; an expired access token is refreshed once and the call repeated. */
  async request(method, path, body = undefined, { retried = false } = {}) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (this.access) headers.Authorization = `Bearer ${this.access}`;
    const response = await fetch(this.baseUrl + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit", // JWT only: no session cookie, so no CSRF token is needed
    });
    if (response.status === 204) return null;
    const data = await response.json();
    if (response.ok) return data;
    if (response.status === 401 && data.code === "token_not_valid" && this.refreshToken && !retried) {
      await this.refresh();
      return this.request(method, path, body, { retried: true });
    }
    throw new ApiError(response.status, data);
  }

  createConversation(fields = {}) {
    return this.request("POST", "/api/v1/conversations/", fields);
  }

  /** Send a message: {user_message, assistant_message}; the answer's run starts. */
  sendMessage(conversationId, content) {
    return this.request("POST", `/api/v1/conversations/${conversationId}/messages/`, { content });
  }

  /** Stop an answer: 200 with the answer `cancelled` (202 if its run has not yet saved). */
  cancel(messageId) {
    return this.request("POST", `/api/v1/messages/${messageId}/cancel/`);
  }

  /**
   * Open a conversation's event stream. Resolves once the stream is open (from then on
   * nothing is missed, so send after this). Returns {close()}.
   *
   * handlers: onStart(message), onDelta(messageId, text, wholeText),
   *   onEnd(messageId, data, wholeText), onAnswerError(data), onReconnect(lastEventId),
   *   onClosed(reason).
   */
  async openStream(conversationId, handlers = {}) {
    const texts = new Map(); // message id -> the text assembled so far
    let lastEventId = null;
    let source = null;
    let closed = false;
    let dropped = false;

    const close = (reason) => {
      closed = true;
      source?.close();
      handlers.onClosed?.(reason);
    };

    const connect = async (resumeFrom) => {
      // A stream is opened with a short-lived token in its URL (EventSource cannot send
      // an Authorization header). A new EventSource cannot send Last-Event-ID either:
      // the position goes in the query instead.
      const { stream_url: url } = await this.request(
        "POST",
        `/api/v1/conversations/${conversationId}/stream-token/`,
      );
      const resume = resumeFrom ? `&last_event_id=${encodeURIComponent(resumeFrom)}` : "";
      source = new this.EventSource(this.baseUrl + url + resume);
      const on = (name, handle) =>
        source.addEventListener(name, (event) => {
          if (event.lastEventId) lastEventId = event.lastEventId;
          handle(JSON.parse(event.data));
        });

      on("message_start", ({ message }) => {
        texts.set(message.id, "");
        handlers.onStart?.(message);
      });
      on("delta", ({ message_id: id, text }) => {
        const whole = (texts.get(id) ?? "") + text;
        // A delta's id is "<message id>:<characters the client now has>": proof that
        // nothing was skipped or repeated (the server guarantees it; we show it).
        if (lastEventId !== `${id}:${whole.length}`) {
          throw new Error(`gap or repeat at ${lastEventId}`);
        }
        texts.set(id, whole);
        handlers.onDelta?.(id, text, whole);
      });
      on("message_end", (data) => handlers.onEnd?.(data.message_id, data, texts.get(data.message_id) ?? ""));
      on("reset", () => texts.clear()); // what follows is sent again in full
      on("conversation_deleted", () => close("conversation_deleted"));

      return new Promise((resolve, reject) => {
        source.addEventListener("open", () => {
          if (dropped) handlers.onReconnect?.(lastEventId);
          dropped = false;
          resolve();
        });
        source.addEventListener("error", (event) => {
          if (event.data) {
            // The stream's own `error` event: an answer ended badly (its `message_end`
            // follows), or, with message_id null, the user's access ended.
            const data = JSON.parse(event.data);
            handlers.onAnswerError?.(data);
            if (data.message_id === null) close(data.code);
            return;
          }
          if (closed) return;
          dropped = true;
          // CONNECTING: the browser reconnects by itself after the stream's `retry:`
          // interval, sending Last-Event-ID. CLOSED: it gave up (a refusal, e.g. 401 after
          // the token expired): mint a new token and resume from the last id ourselves.
          if (source.readyState === this.EventSource.CLOSED) {
            connect(lastEventId).then(resolve, (error) => {
              close(error.code ?? "error");
              reject(error);
            });
          }
        });
      });
    };

    await connect(null);
    return { close: () => close("closed"), lastEventId: () => lastEventId };
  }
}
