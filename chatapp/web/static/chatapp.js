/*
 * chatapp client: open a session, send a message, follow its reply, stop.
 *
 * Plain ES5 with no dependencies, so a host site can include it on any page:
 *
 *   <script src="{{ url_for('chatapp.static', filename='chatapp.js') }}"></script>
 *   var client = new ChatAppClient("{{ url_for('chatapp.create_session') }}", {remember: true});
 *   client.send("Hello", {token: function (d) { out.textContent += d.text; }});
 *
 * The API base is the URL of the sessions collection (".../api/sessions"), which knows
 * the mount point, so nothing here assumes "/api". README.md documents every method.
 */
(function (global) {
  "use strict";

  /** An API or network failure: `status` (0 when the network failed), `code`, `message`. */
  function ChatAppError(status, code, message, retryAfter) {
    this.name = "ChatAppError";
    this.status = status;
    this.code = code;
    this.message = message;
    // Worth trying again later: the network, rate limits, an overloaded dependency.
    this.retryable = status === 0 || status === 429 || status === 502 || status === 503 || status === 504;
    this.retryAfter = retryAfter;
  }
  ChatAppError.prototype = Object.create(Error.prototype);
  ChatAppError.prototype.constructor = ChatAppError;

  var SERVER_EVENTS = ["start", "token", "error", "end"];

  // After EventSource gave up on a stream, the pause before the client tries again;
  // doubled after each attempt that fails, back to the start once a stream opens.
  var RESUME_PAUSE_MS = 1000;
  var RESUME_PAUSE_MAX_MS = 30000;

  function storage() {
    // Storage can be missing or refuse access (privacy modes); the chat still works.
    try {
      return global.localStorage || null;
    } catch (e) {
      return null;
    }
  }

  function ChatAppClient(apiBase, options) {
    options = options || {};
    this.apiBase = String(apiBase).replace(/\/+$/, "");
    this.credentials = options.credentials || "same-origin";
    // Two mounts of chatapp on one origin must not share a session id.
    this.storageKey = options.remember
      ? "chatapp:session:" + new URL(this.apiBase, global.location.href).href
      : null;
    this.sessionId = options.sessionId || this._load();
    this.subscription = null;
  }

  ChatAppClient.Error = ChatAppError;

  ChatAppClient.prototype._load = function () {
    var store = this.storageKey && storage();
    return (store && store.getItem(this.storageKey)) || null;
  };

  ChatAppClient.prototype._remember = function (sessionId) {
    this.sessionId = sessionId;
    var store = this.storageKey && storage();
    if (!store) return;
    try {
      if (sessionId) store.setItem(this.storageKey, sessionId);
      else store.removeItem(this.storageKey);
    } catch (e) {
      // A full or locked storage only costs the reload feature.
    }
  };

  /** fetch() a JSON endpoint under the API base; resolves with its JSON (null for 204). */
  ChatAppClient.prototype.request = function (method, path, body) {
    var init = { method: method, credentials: this.credentials, headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(this.apiBase + path, init).then(
      function (response) {
        if (response.status === 204) return null;
        return response.json().then(
          function (data) {
            if (response.ok) return data;
            var error = (data && data.error) || {};
            var after = parseInt(response.headers.get("Retry-After") || "", 10);
            throw new ChatAppError(
              response.status,
              error.code || "http_" + response.status,
              error.message || response.statusText,
              isNaN(after) ? null : after
            );
          },
          function () {
            throw new ChatAppError(response.status, "http_" + response.status, "The server answered " + response.status + ".", null);
          }
        );
      },
      function () {
        throw new ChatAppError(0, "network_error", "The server cannot be reached.", null);
      }
    );
  };

  /** The current session id, creating a session first when there is none. */
  ChatAppClient.prototype.open = function () {
    var self = this;
    if (self.sessionId) return Promise.resolve(self.sessionId);
    return self.request("POST", "", {}).then(function (data) {
      self._remember(data.session_id);
      return data.session_id;
    });
  };

  /**
   * A page of the session's history, newest messages last, or null (and the session
   * forgotten) when it is gone. Its `cursor`, when older messages exist, goes in
   * options.before to get the page before it.
   */
  ChatAppClient.prototype.history = function (options) {
    var self = this;
    if (!self.sessionId) return Promise.resolve(null);
    var before = options && options.before;
    var query = before ? "?before=" + encodeURIComponent(before) : "";
    return self.request("GET", "/" + encodeURIComponent(self.sessionId) + query).then(null, function (error) {
      if (error.status === 404) {
        self._remember(null);
        return null;
      }
      throw error;
    });
  };

  /**
   * Follow the session's latest turn on an EventSource until its `end`.
   *
   * handlers: start, token, error, end (each gets the event's data and the MessageEvent),
   * open (connected), reconnecting (the connection dropped and is being restored; gets
   * the error when the client could not even reach the server to check on the turn),
   * closed (the turn is over but its `end` never came; gets the session's history to
   * settle from, or null when the session is gone).
   * options.after: resume after this event id. Returns the subscription ({close(),
   * lastEventId}); a second subscribe() closes the first.
   *
   * A dropped connection is EventSource's to restore: it resends Last-Event-ID by itself.
   * When it gives up instead (a 204, an HTTP error), the client asks the history whether
   * the turn goes on, and if so follows it again after the last event it saw, after a
   * pause that doubles while attempts fail. No event id is ever delivered twice.
   */
  ChatAppClient.prototype.subscribe = function (handlers, options) {
    var self = this;
    handlers = handlers || {};
    options = options || {};
    self.close();
    var url = self.apiBase + "/" + encodeURIComponent(self.sessionId) + "/stream";
    var seen = {};
    var pause = RESUME_PAUSE_MS;
    var timer = null;
    var subscription = {
      source: null,
      lastEventId: options.after || null,
      closed: false,
      close: function () {
        if (subscription.closed) return;
        subscription.closed = true;
        global.clearTimeout(timer);
        if (subscription.source) subscription.source.close();
        if (self.subscription === subscription) self.subscription = null;
      }
    };
    self.subscription = subscription;

    function call(name, data, event) {
      if (typeof handlers[name] === "function") handlers[name](data, event);
    }

    function later(next, error) {
      call("reconnecting", error);
      timer = global.setTimeout(next, pause);
      pause = Math.min(pause * 2, RESUME_PAUSE_MAX_MS);
    }

    function connect() {
      var after = subscription.lastEventId;
      var source = new EventSource(after ? url + "?last_event_id=" + encodeURIComponent(after) : url, {
        withCredentials: self.credentials === "include"
      });
      subscription.source = source;
      source.addEventListener("open", function () {
        if (subscription.closed) return;
        pause = RESUME_PAUSE_MS;
        call("open");
      });
      SERVER_EVENTS.forEach(function (name) {
        source.addEventListener(name, function (event) {
          // The server's `error` event has data; EventSource's own connection error has none.
          if (name === "error" && !("data" in event && typeof event.data === "string")) return;
          if (subscription.closed) return;
          // Ids are unique within a session: one seen before is never shown twice.
          if (event.lastEventId) {
            if (seen[event.lastEventId]) return;
            seen[event.lastEventId] = true;
            subscription.lastEventId = event.lastEventId;
          }
          var data;
          try {
            data = JSON.parse(event.data);
          } catch (e) {
            return;
          }
          if (name === "end") subscription.close();
          call(name, data, event);
        });
      });
      source.addEventListener("error", function (event) {
        if ("data" in event && typeof event.data === "string") return;
        if (subscription.closed) return;
        if (source.readyState === EventSource.CLOSED) {
          // A 204, an HTTP error or a wrong content type: EventSource gives up.
          check();
        } else {
          call("reconnecting");
        }
      });
    }

    /** EventSource gave up before `end`: follow the turn again if it goes on, else settle. */
    function check() {
      self.history().then(
        function (history) {
          if (subscription.closed) return;
          if (history && history.generating) {
            later(connect);
            return;
          }
          subscription.close();
          call("closed", history);
        },
        function (error) {
          if (subscription.closed) return;
          later(check, error);
        }
      );
    }

    connect();
    return subscription;
  };

  /** Post a message, then follow its reply. Resolves with {message_id, stream_url}. */
  ChatAppClient.prototype.send = function (text, handlers) {
    var self = this;
    return self
      .open()
      .then(function (id) {
        return self.request("POST", "/" + encodeURIComponent(id) + "/messages", { message: text });
      })
      .then(function (data) {
        self.subscribe(handlers);
        return data;
      });
  };

  /** Ask the server to stop the reply being generated; its stream then ends `cancelled`. */
  ChatAppClient.prototype.stop = function () {
    if (!this.sessionId) return Promise.resolve(null);
    return this.request("POST", "/" + encodeURIComponent(this.sessionId) + "/cancel");
  };

  /** Stop following the stream (the reply goes on being generated on the server). */
  ChatAppClient.prototype.close = function () {
    if (this.subscription) this.subscription.close();
  };

  /** Forget the session here; the next send() opens a new one. */
  ChatAppClient.prototype.reset = function () {
    this.close();
    this._remember(null);
  };

  /** Delete the session on the server too, then reset(). */
  ChatAppClient.prototype.forget = function () {
    var self = this;
    var id = self.sessionId;
    self.reset();
    if (!id) return Promise.resolve(null);
    return self.request("DELETE", "/" + encodeURIComponent(id)).then(null, function (error) {
      if (error.status !== 404) throw error;
      return null;
    });
  };

  global.ChatAppClient = ChatAppClient;
})(window);
