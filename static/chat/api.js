// chatsite page script, HTTP: `api()` calls the JSON API with the session cookie and the
// CSRF token, and turns a non-2xx answer (the project's one error body) into an ApiError
// carrying the status, the error code, a readable message (with field errors) and the
// Retry-After header in seconds. Also the page URLs built from the templates in `cfg`.

import { cfg } from "./page.js";

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = 0) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter; // seconds, from the Retry-After header (0: none)
  }
}

function csrfToken() {
  const input = document.querySelector("input[name=csrfmiddlewaretoken]");
  if (input && input.value) return input.value;
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

export async function api(url, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "network_error", "Can't reach the server. Check your connection.");
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    let message =
      (data && (data.message || data.detail)) || `Request failed (HTTP ${response.status}).`;
    const fieldErrors = data && data.errors;
    if (fieldErrors && typeof fieldErrors === "object") {
      const details = Object.entries(fieldErrors).map(
        ([field, problems]) => `${field}: ${[].concat(problems).join(" ")}`,
      );
      if (details.length) message = `${message} ${details.join("; ")}`;
    }
    const retryAfter = Number(response.headers.get("Retry-After")) || 0;
    throw new ApiError(response.status, (data && data.code) || "http_error", message, retryAfter);
  }
  return data;
}

const fromTemplate = (template, id) => template.split(cfg.placeholderId).join(id);
export const conversationPageUrl = (id) => fromTemplate(cfg.conversationUrlTemplate, id);
export const cancelUrl = (id) => fromTemplate(cfg.cancelUrlTemplate, id);
export const regenerateUrl = (id) => fromTemplate(cfg.regenerateUrlTemplate, id);
export const editUrl = (id) => fromTemplate(cfg.editUrlTemplate, id);
export const conversationApiUrlFor = (id) => `${cfg.conversationsUrl}${encodeURIComponent(id)}/`;
export const messagesUrlFor = (id) => `${conversationApiUrlFor(id)}messages/`;
