/*
 * <chatapp-chat>: the chat as one element for any page of a host site, no build step.
 *
 *   <script src="/assistant/static/chatapp-chat.js" defer></script>
 *   <chatapp-chat src="/assistant"></chatapp-chat>
 *
 * It loads what it is built on from beside itself when the page has not (chatapp.js,
 * tabshare.js, ssestream.js, markdown.js), draws in a shadow root so the page's styles
 * and its own never mix, and talks to chatapp through ChatAppClient: replies stream in as
 * safe Markdown, Enter sends, Shift+Enter adds a line, Esc or Stop cancels, the chat is
 * kept across reloads (the same one as the chat page's, per mount point), and the tabs of
 * a browser share one stream.
 *
 * Attributes: src (the mount point; default: where this script was loaded from),
 * transport ("eventsource" or "fetch"), placeholder. Property `options`, set before the
 * element is attached: more ChatAppClient options, such as {headers: {Authorization: ...}}.
 * Theming: the custom properties --chatapp-accent, --chatapp-background, --chatapp-text,
 * --chatapp-muted, --chatapp-font and --chatapp-height, set on the element.
 */
(function (global) {
  "use strict";

  var document = global.document;
  var script = document.currentScript;
  // ".../assistant/static/chatapp-chat.js" -> ".../assistant/static/"
  var staticBase = script && script.src ? script.src.replace(/[^/]*$/, "") : null;
  var NEEDS = [
    ["ChatAppClient", "chatapp.js"],
    ["ChatAppTabShare", "tabshare.js"],
    ["ChatAppSSE", "ssestream.js"],
    ["ChatAppMarkdown", "markdown.js"]
  ];

  var CSS = [
    ":host { display: block; height: var(--chatapp-height, 28rem); font: 15px/1.5 var(--chatapp-font, system-ui, sans-serif);",
    "  color: var(--chatapp-text, #1f2328); --bg: var(--chatapp-background, #ffffff); --accent: var(--chatapp-accent, #2563eb);",
    "  --muted: var(--chatapp-muted, #6b7280); --line: color-mix(in srgb, currentColor 14%, transparent); }",
    "@media (prefers-color-scheme: dark) { :host { color: var(--chatapp-text, #e7e7ea); --bg: var(--chatapp-background, #18181b);",
    "  --accent: var(--chatapp-accent, #60a5fa); --muted: var(--chatapp-muted, #a1a1aa); } }",
    ":host([hidden]) { display: none; }",
    ".chat { box-sizing: border-box; height: 100%; display: flex; flex-direction: column; background: var(--bg);",
    "  border: 1px solid var(--line); border-radius: 12px; overflow: hidden; }",
    ".log { flex: 1; overflow-y: auto; padding: 12px; display: flex; flex-direction: column; gap: 10px; }",
    ".empty { margin: auto; color: var(--muted); }",
    ".message { max-width: 85%; padding: 8px 12px; border-radius: 12px; overflow-wrap: anywhere; }",
    ".user { align-self: flex-end; background: var(--accent); color: #fff; white-space: pre-wrap; }",
    ".assistant { align-self: flex-start; background: color-mix(in srgb, currentColor 6%, transparent); }",
    ".assistant > :first-child { margin-top: 0; } .assistant > :last-child { margin-bottom: 0; }",
    ".assistant pre { overflow-x: auto; padding: 8px; border-radius: 8px; background: color-mix(in srgb, currentColor 8%, transparent); }",
    ".assistant code { font: 0.9em ui-monospace, monospace; }",
    ".assistant a { color: var(--accent); }",
    ".note { color: var(--muted); font-size: 0.85em; margin-top: 4px; }",
    ".failed { color: #d1242f; }",
    ".busy .assistant:last-child::after { content: '\u258d'; color: var(--muted); }",
    "form { display: flex; gap: 8px; padding: 10px; border-top: 1px solid var(--line); }",
    "textarea { flex: 1; resize: none; font: inherit; color: inherit; background: transparent; border: 1px solid var(--line);",
    "  border-radius: 8px; padding: 6px 10px; min-height: 2.2em; max-height: 8em; }",
    "button { font: inherit; border: 0; border-radius: 8px; padding: 0 14px; color: #fff; background: var(--accent); cursor: pointer; }",
    "button:disabled { opacity: 0.5; cursor: default; }",
    "button:focus-visible, textarea:focus-visible { outline: 2px solid var(--accent); outline-offset: 1px; }",
    ".stop { background: var(--muted); }",
    "[hidden] { display: none !important; }",
    ".visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }"
  ].join("\n");

  function load(name) {
    return new Promise(function (resolve, reject) {
      var tag = document.createElement("script");
      tag.src = staticBase + name;
      tag.async = false; // in order: chatapp.js before the rest
      tag.onload = resolve;
      tag.onerror = function () {
        reject(new Error("chatapp-chat: could not load " + tag.src));
      };
      document.head.appendChild(tag);
    });
  }

  function styles(root) {
    // A constructed sheet is shared by every element and needs no inline <style>.
    if (root.adoptedStyleSheets !== undefined && typeof CSSStyleSheet === "function") {
      try {
        var sheet = new CSSStyleSheet();
        sheet.replaceSync(CSS);
        root.adoptedStyleSheets = [sheet];
        return;
      } catch (e) {
        // Older engines: fall through to a <style> element.
      }
    }
    var style = document.createElement("style");
    style.textContent = CSS;
    root.appendChild(style);
  }

  function define() {
    if (global.customElements.get("chatapp-chat")) return;

    function ChatAppChat() {
      return Reflect.construct(HTMLElement, [], ChatAppChat);
    }
    ChatAppChat.prototype = Object.create(HTMLElement.prototype);
    ChatAppChat.prototype.constructor = ChatAppChat;
    Object.setPrototypeOf(ChatAppChat, HTMLElement);

    ChatAppChat.prototype.connectedCallback = function () {
      if (this.client) return;
      if (!this.shadowRoot) this._build();
      var src = (this.getAttribute("src") || (staticBase ? staticBase.replace(/static\/$/, "") : "")).replace(/\/+$/, "");
      var options = { remember: true, transport: this.getAttribute("transport") || "eventsource" };
      var extra = this.options || {};
      for (var name in extra) options[name] = extra[name];
      this.client = new global.ChatAppClient(src + "/api/sessions", options);
      this.busy = false;
      this.reply = null;
      this._restore();
    };

    ChatAppChat.prototype.disconnectedCallback = function () {
      if (this.client) this.client.close();
      this.client = null;
    };

    ChatAppChat.prototype._build = function () {
      var self = this;
      var root = self.attachShadow({ mode: "open" });
      styles(root);
      var chat = document.createElement("div");
      chat.className = "chat";
      chat.setAttribute("part", "chat");
      var log = document.createElement("div");
      log.className = "log";
      log.setAttribute("role", "log");
      log.setAttribute("aria-live", "polite");
      log.setAttribute("aria-label", "Conversation");
      var empty = document.createElement("p");
      empty.className = "empty";
      empty.textContent = "Ask anything.";
      log.appendChild(empty);
      var form = document.createElement("form");
      var label = document.createElement("label");
      label.className = "visually-hidden";
      label.textContent = "Message";
      var input = document.createElement("textarea");
      input.rows = 1;
      input.placeholder = self.getAttribute("placeholder") || "Message";
      label.appendChild(input);
      var send = document.createElement("button");
      send.type = "submit";
      send.className = "send";
      send.textContent = "Send";
      var stop = document.createElement("button");
      stop.type = "button";
      stop.className = "stop";
      stop.textContent = "Stop";
      stop.hidden = true;
      form.appendChild(label);
      form.appendChild(send);
      form.appendChild(stop);
      chat.appendChild(log);
      chat.appendChild(form);
      root.appendChild(chat);
      self.parts = { chat: chat, log: log, empty: empty, form: form, input: input, send: send, stop: stop };

      form.addEventListener("submit", function (event) {
        event.preventDefault();
        self._send();
      });
      input.addEventListener("keydown", function (event) {
        if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          self._send();
        } else if (event.key === "Escape" && self.busy) {
          event.preventDefault();
          self._stop();
        }
      });
      stop.addEventListener("click", function () {
        self._stop();
      });
    };

    ChatAppChat.prototype._setBusy = function (busy) {
      this.busy = busy;
      this.parts.chat.classList.toggle("busy", busy);
      this.parts.send.hidden = busy;
      this.parts.stop.hidden = !busy;
    };

    ChatAppChat.prototype._message = function (role, text) {
      var parts = this.parts;
      parts.empty.hidden = true;
      var node = document.createElement("div");
      node.className = "message " + role;
      node.setAttribute("data-role", role);
      if (role === "user") node.textContent = text;
      else render(node, text);
      parts.log.appendChild(node);
      parts.log.scrollTop = parts.log.scrollHeight;
      return node;
    };

    ChatAppChat.prototype._note = function (node, text, failed) {
      var note = document.createElement("p");
      note.className = "note" + (failed ? " failed" : "");
      note.textContent = text;
      node.appendChild(note);
    };

    /** Follow a reply into `node`; the handlers ChatAppClient calls. */
    ChatAppChat.prototype._follow = function (node) {
      var self = this;
      var text = "";
      var error = null;
      var frame = 0;
      var done = false;
      var log = self.parts.log;
      function draw() {
        frame = 0;
        var stick = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
        render(node, text);
        if (stick) log.scrollTop = log.scrollHeight;
      }
      function finish(reason) {
        if (done) return;
        done = true;
        if (frame) global.cancelAnimationFrame(frame);
        draw();
        if (reason === "cancelled") self._note(node, "Stopped");
        if (error) self._note(node, error.message, true);
        node.setAttribute("data-finished", reason || "");
        self._setBusy(false);
      }
      return {
        token: function (data) {
          text += data.text;
          // One render per frame however fast tokens come.
          if (!frame) frame = global.requestAnimationFrame(draw);
        },
        error: function (data) {
          error = data;
        },
        end: function (data) {
          finish(data.finish_reason);
        },
        closed: function (history) {
          // The reply is over but its end never came: take the text the server kept.
          var kept = history ? history.messages[history.messages.length - 1] : null;
          if (kept && kept.role === "assistant") text = kept.content;
          finish(null);
        }
      };
    };

    ChatAppChat.prototype._restore = function () {
      var self = this;
      var client = self.client;
      if (!client.sessionId) return;
      client.history().then(
        function (history) {
          if (!history || self.client !== client) return;
          history.messages.forEach(function (message) {
            self._message(message.role === "user" ? "user" : "assistant", message.content);
          });
          if (history.generating) {
            // The stream replays the running reply from its start, then goes on live.
            self._setBusy(true);
            client.subscribe(self._follow(self._message("assistant", "")));
          }
        },
        function (error) {
          if (self.client === client) self._notice(error.message);
        }
      );
    };

    ChatAppChat.prototype._notice = function (text) {
      var node = this._message("assistant", "");
      this._note(node, text, true);
    };

    ChatAppChat.prototype._send = function () {
      var self = this;
      var input = self.parts.input;
      var text = input.value;
      if (!text.trim() || self.busy || !self.client) return;
      input.value = "";
      var user = self._message("user", text);
      var node = self._message("assistant", "");
      self._setBusy(true);
      self.client.send(text, self._follow(node)).then(null, function (error) {
        // The message never reached the server: give it back.
        user.remove();
        node.remove();
        input.value = text;
        self._setBusy(false);
        if (error.status === 404) self.client.reset();
        self._notice(error.message);
      });
    };

    ChatAppChat.prototype._stop = function () {
      if (this.busy && this.client) this.client.stop().then(null, function () {});
    };

    global.customElements.define("chatapp-chat", ChatAppChat);
  }

  function render(node, text) {
    if (global.ChatAppMarkdown) {
      node.replaceChildren(global.ChatAppMarkdown.render(text));
    } else {
      node.textContent = text;
    }
  }

  var missing = NEEDS.filter(function (need) {
    return !global[need[0]];
  });
  if (!missing.length) {
    define();
  } else if (!staticBase) {
    global.console.error("chatapp-chat: load chatapp.js, tabshare.js, ssestream.js and markdown.js first, or load this script with a src.");
  } else {
    Promise.all(
      missing.map(function (need) {
        return load(need[1]);
      })
    ).then(define, function (error) {
      global.console.error(error.message);
    });
  }
})(window);
