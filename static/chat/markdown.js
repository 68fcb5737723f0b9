// chatsite markdown: render untrusted model output the way chat/rendering.py does on the
// server, then highlight code blocks and give each a header with its language and a copy
// button. Used for answers as they stream in, for older answers loaded with their server-
// rendered HTML, and to decorate server-rendered history.
//
// Model output is untrusted. Three layers keep it inert:
//   1. markdown-it with html: false (raw HTML is shown as text), links only for http(s) and
//      mailto (anything else stays literal text), images rendered as links, never <img>;
//   2. DOMPurify with an allow-list of tags and attributes (no img, svg, style, script, on*);
//   3. the page's Content-Security-Policy (script-src 'self', img-src 'self' data:).
//
// This stays a classic deferred script, not a module: it builds on the vendored markdown-it,
// DOMPurify and highlight.js, which are classic scripts that set globals, so it hands its API
// on the same way (window.chatMarkdown, read by static/chat/page.js). Deferred scripts and
// module scripts run in document order, so it is always there before the page modules run.
"use strict";

(() => {
  const ALLOWED_URL = /^(?:https?:\/\/|mailto:)/i;
  const LANGUAGE_CLASS = /^language-[A-Za-z0-9_+#.-]{1,40}$/;
  const ALIGN_CLASS = /^align-(?:left|center|right)$/;
  const TABLE_ALIGN = /text-align:\s*(left|center|right)/;
  const TAGS = [
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "s", "del",
    "code", "pre", "blockquote", "ul", "ol", "li", "a",
    "table", "thead", "tbody", "tr", "th", "td",
  ];
  const CLASS_RULES = { CODE: LANGUAGE_CLASS, TH: ALIGN_CLASS, TD: ALIGN_CLASS };
  const HIGHLIGHT_CACHE_LIMIT = 300;
  const COPIED_MS = 1600;

  const missing = ["markdownit", "DOMPurify"].filter((name) => !window[name]);
  if (missing.length) {
    console.error(`chatsite: ${missing.join(", ")} failed to load; answers are shown as text.`);
  }

  // ------------------------------------------------------------------ markdown-it

  let md = null;
  if (window.markdownit) {
    md = window
      .markdownit("commonmark", { html: false, linkify: false, typographer: false })
      .enable(["table", "strikethrough"]);
    md.validateLink = (url) => ALLOWED_URL.test(url.trim());
    const escapeHtml = md.utils.escapeHtml;

    // An image is a link labelled with its alt text: no request is ever made for it.
    md.renderer.rules.image = (tokens, idx, options, env, self) => {
      const token = tokens[idx];
      const label = self.renderInlineAsText(token.children || [], options, env).trim() || "image";
      return `<a href="${escapeHtml(token.attrGet("src") || "")}" class="md-image">${escapeHtml(label)}</a>`;
    };

    // Table alignment arrives as style="text-align:…", which the CSP would refuse: use a class.
    const cell = (tokens, idx, options, env, self) => {
      const token = tokens[idx];
      const style = token.attrGet("style");
      if (style) {
        token.attrs = token.attrs.filter(([name]) => name !== "style");
        const match = TABLE_ALIGN.exec(style);
        if (match) token.attrJoin("class", `align-${match[1]}`);
      }
      return self.renderToken(tokens, idx, options);
    };
    md.renderer.rules.th_open = cell;
    md.renderer.rules.td_open = cell;
  }

  // ------------------------------------------------------------------ DOMPurify

  // A private instance, so these hooks apply to model output only.
  const purify = window.DOMPurify ? window.DOMPurify(window) : null;
  const PURIFY_CONFIG = {
    ALLOWED_TAGS: TAGS,
    ALLOWED_ATTR: ["href", "title", "class", "start"],
    ALLOW_DATA_ATTR: false,
    ALLOW_ARIA_ATTR: false,
    ALLOWED_URI_REGEXP: ALLOWED_URL,
    FORBID_TAGS: ["img", "svg", "math", "style", "script", "iframe", "object", "form", "input"],
    RETURN_DOM_FRAGMENT: true,
  };
  if (purify) {
    purify.addHook("afterSanitizeAttributes", (node) => {
      if (node.tagName === "A") {
        const href = node.getAttribute("href");
        if (href !== null && !ALLOWED_URL.test(href.trim())) node.removeAttribute("href");
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer");
      }
      if (node.hasAttribute && node.hasAttribute("class")) {
        const value = node.getAttribute("class");
        const rule = CLASS_RULES[node.tagName];
        let kept = [];
        if (node.tagName === "A") kept = value === "md-image" ? ["md-image"] : [];
        else if (rule) kept = value.split(/\s+/).filter((name) => rule.test(name));
        if (kept.length) node.setAttribute("class", kept.join(" "));
        else node.removeAttribute("class");
      }
    });
  }

  // ------------------------------------------------------------------ code blocks

  const highlighted = new Map();

  function highlight(code, language) {
    const hljs = window.hljs;
    if (!hljs || !language || !hljs.getLanguage(language)) return null;
    const key = `${language}\u0000${code}`;
    if (highlighted.has(key)) return highlighted.get(key);
    let html = null;
    try {
      html = hljs.highlight(code, { language, ignoreIllegals: true }).value;
    } catch {
      html = null;
    }
    if (highlighted.size >= HIGHLIGHT_CACHE_LIMIT) highlighted.clear();
    highlighted.set(key, html);
    return html;
  }

  function languageOf(code) {
    for (const name of code.classList) {
      if (LANGUAGE_CLASS.test(name)) return name.slice("language-".length);
    }
    return "";
  }

  function icon(id) {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "icon");
    svg.setAttribute("aria-hidden", "true");
    const use = document.createElementNS("http://www.w3.org/2000/svg", "use");
    use.setAttribute("href", `#${id}`);
    svg.append(use);
    return svg;
  }

  // <pre><code class="language-x"> → a block with a header (language, copy) and colours.
  function decorateCodeBlocks(root) {
    for (const pre of root.querySelectorAll("pre")) {
      if (pre.parentElement && pre.parentElement.classList.contains("code-block")) continue;
      const code = pre.querySelector("code") || pre;
      const language = languageOf(code);
      // hljs escapes what it highlights; its output is markup we generated, not the model's.
      const html = highlight(code.textContent, language);
      if (html !== null) {
        code.innerHTML = html;
        code.classList.add("hljs");
      }
      const block = document.createElement("div");
      block.className = "code-block";
      const head = document.createElement("div");
      head.className = "code-block__head";
      const label = document.createElement("span");
      label.className = "code-block__lang";
      label.textContent = language || "text";
      const copy = document.createElement("button");
      copy.type = "button";
      copy.className = "code-block__copy";
      copy.dataset.action = "copy-code";
      copy.dataset.testid = "copy-code-button";
      copy.setAttribute("aria-label", `Copy ${language || "code"}`);
      const text = document.createElement("span");
      text.textContent = "Copy";
      copy.append(icon("i-copy"), text);
      head.append(label, copy);
      pre.replaceWith(block);
      block.append(head, pre);
    }
  }

  // ------------------------------------------------------------------ public

  /** Render `text` (untrusted markdown) into `target`, replacing its children. */
  function render(target, text) {
    if (!md || !purify) {
      target.textContent = text;
      return;
    }
    const fragment = purify.sanitize(md.render(text || ""), PURIFY_CONFIG);
    decorateCodeBlocks(fragment);
    target.replaceChildren(fragment);
  }

  /**
   * Show HTML the server rendered and sanitized (chat/rendering.py, the source of truth for
   * stored answers) in `target`: DOMPurify checks it against the same allow-list first, as
   * it does the live text, so a mistake on either side cannot put markup on the page.
   */
  function renderHtml(target, html) {
    let fragment;
    if (purify) {
      fragment = purify.sanitize(html || "", PURIFY_CONFIG);
    } else {
      // No DOMPurify: what the server sent, parsed inert, as in a server-rendered page.
      const holder = document.createElement("template");
      holder.innerHTML = html || "";
      fragment = holder.content;
    }
    decorateCodeBlocks(fragment);
    target.replaceChildren(fragment);
  }

  /** Copy `text` to the clipboard; resolves true on success. */
  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // No async clipboard (e.g. plain http on another host): the old selection trick.
      const area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "visually-hidden";
      document.body.append(area);
      area.select();
      let ok = false;
      try {
        ok = document.execCommand("copy");
      } catch {
        ok = false;
      }
      area.remove();
      return ok;
    }
  }

  /** Show "Copied" on a copy button for a moment. */
  function flashCopied(button, ok) {
    const label = button.querySelector("span");
    const use = button.querySelector("use");
    const before = label ? label.textContent : null;
    button.classList.add(ok ? "is-copied" : "is-failed");
    if (label) label.textContent = ok ? "Copied" : "Copy failed";
    if (use) use.setAttribute("href", ok ? "#i-check" : "#i-copy");
    button.dataset.copied = ok ? "true" : "false";
    clearTimeout(button.copiedTimer);
    button.copiedTimer = setTimeout(() => {
      button.classList.remove("is-copied", "is-failed");
      if (label) label.textContent = before;
      if (use) use.setAttribute("href", "#i-copy");
      delete button.dataset.copied;
    }, COPIED_MS);
  }

  window.chatMarkdown = { render, renderHtml, decorateCodeBlocks, copyText, flashCopied };
})();
