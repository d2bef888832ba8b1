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
 * the mount point, so nothing here assumes "/api". docs/client.md documents every method.
 *
 * Beside it, when the page includes them: tabshare.js (the tabs of a browser share one
 * stream per session) and ssestream.js (the fetch transport, `transport: "fetch"`).
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

  // Each is delivered to the handler of its name, with ids like every other event:
  // `reasoning` (the model's thinking) comes before and between `token`s; `reset` drops
  // the turn's text so far (answer and thinking), as the reply starts over; `resumed` says
  // another server continues the reply after its first `after_chars` characters.
  var SERVER_EVENTS = ["start", "reasoning", "token", "reset", "resumed", "error", "end"];

  // After EventSource gave up on a stream, the pause before the client tries again;
  // doubled after each attempt that fails, back to the start once a stream opens.
  var RESUME_PAUSE_MS = 1000;
  var RESUME_PAUSE_MAX_MS = 30000;
  // The fetch transport's reconnect delay until the stream says (`retry`); the server's
  // own default, CHATAPP_RETRY_MS.
  var RETRY_MS = 3000;

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
    // Sent with every request: a host's own credentials (a bearer token), as an object
    // or a function returning one. EventSource cannot send them; the token of each
    // stream_url opens the stream instead.
    this.headers = options.headers || null;
    // "eventsource" (the default), or "fetch": the message post answers with the reply's
    // stream itself, read from fetch()'s body; later streams are fetch()es too.
    this.transport = options.transport || "eventsource";
    if (this.transport !== "eventsource" && this.transport !== "fetch") {
      throw new Error('ChatAppClient: transport must be "eventsource" or "fetch", not ' + JSON.stringify(this.transport));
    }
    if (this.transport === "fetch" && !global.ChatAppSSE) {
      throw new Error('ChatAppClient: transport "fetch" needs ssestream.js; include it beside chatapp.js');
    }
    // The tabs of this browser share one stream per session (tabshare.js).
    this.shareTabs = options.shareTabs !== false;
    // The latest stream_url the API gave for each session: it carries a fresh token.
    this.streamUrls = {};
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

  /** The headers of a request: the client's own (options.headers), then `extra`. */
  ChatAppClient.prototype._headers = function (extra) {
    var own = typeof this.headers === "function" ? this.headers() : this.headers;
    var headers = {};
    var name;
    for (name in own || {}) headers[name] = own[name];
    for (name in extra || {}) headers[name] = extra[name];
    return headers;
  };

  /** The ChatAppError of a failed answer, from its JSON error body when it has one. */
  function errorOf(response) {
    var after = parseInt(response.headers.get("Retry-After") || "", 10);
    return response.json().then(
      function (data) {
        var error = (data && data.error) || {};
        return new ChatAppError(
          response.status,
          error.code || "http_" + response.status,
          error.message || response.statusText,
          isNaN(after) ? null : after
        );
      },
      function () {
        return new ChatAppError(response.status, "http_" + response.status, "The server answered " + response.status + ".", null);
      }
    );
  }

  function networkError() {
    return new ChatAppError(0, "network_error", "The server cannot be reached.", null);
  }

  /** fetch() a JSON endpoint under the API base; resolves with its JSON (null for 204). */
  ChatAppClient.prototype.request = function (method, path, body) {
    var init = { method: method, credentials: this.credentials, headers: this._headers({ Accept: "application/json" }) };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(this.apiBase + path, init).then(
      function (response) {
        if (response.status === 204) return null;
        if (!response.ok) {
          return errorOf(response).then(function (error) {
            throw error;
          });
        }
        return response.json().then(null, function () {
          throw new ChatAppError(response.status, "http_" + response.status, "The server answered " + response.status + ".", null);
        });
      },
      function () {
        throw networkError();
      }
    );
  };

  /** Keep the stream_url of an answer about `sessionId`: its token is the freshest. */
  ChatAppClient.prototype._noteStreamUrl = function (sessionId, data) {
    if (sessionId && data && typeof data.stream_url === "string") {
      // Resolved against the API base: the server answers with a path.
      this.streamUrls[sessionId] = new URL(data.stream_url, new URL(this.apiBase, global.location.href)).href;
    }
    return data;
  };

  /** Where the session's stream is: the latest stream_url the API gave, else its path. */
  ChatAppClient.prototype._streamUrl = function (sessionId) {
    return this.streamUrls[sessionId] || this.apiBase + "/" + encodeURIComponent(sessionId) + "/stream";
  };

  /** The current session id, creating a session first when there is none. */
  ChatAppClient.prototype.open = function () {
    var self = this;
    if (self.sessionId) return Promise.resolve(self.sessionId);
    return self.request("POST", "", {}).then(function (data) {
      self._remember(data.session_id);
      self._noteStreamUrl(data.session_id, data);
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
    var sessionId = self.sessionId;
    var before = options && options.before;
    var query = before ? "?before=" + encodeURIComponent(before) : "";
    return self.request("GET", "/" + encodeURIComponent(sessionId) + query).then(function (history) {
      // Asking for the history renews the stream token too.
      return self._noteStreamUrl(sessionId, history);
    }, function (error) {
      if (error.status === 404) {
        self._remember(null);
        return null;
      }
      throw error;
    });
  };

  /**
   * Follow the session's latest turn until its `end`.
   *
   * handlers: start, reasoning, token, reset, resumed, error, end (each gets the event's
   * data and the MessageEvent), open (connected), reconnecting (the connection dropped and is being
   * restored; gets the error when the client could not even reach the server to check on
   * the turn), closed (the turn is over but its `end` never came; gets the session's
   * history to settle from, or null when the session is gone).
   * options.after: resume after this event id. Returns the subscription ({close(),
   * lastEventId, leading}); a second subscribe() closes the first.
   *
   * A dropped connection is restored after the last event seen: by EventSource itself,
   * which resends Last-Event-ID, or by the client on the fetch transport. When the
   * connection gives up instead (a 204, an HTTP error), the client asks the history
   * whether the turn goes on, and if so follows it again after the last event it saw,
   * after a pause that doubles while attempts fail. No event id is ever delivered twice:
   * a replay never hands a `reset` over again, which would wipe the text that followed it.
   *
   * With tabshare.js on the page, the tabs of this browser that follow one session share
   * one connection: `leading` says whether this tab holds it; the others get its events.
   */
  ChatAppClient.prototype.subscribe = function (handlers, options) {
    return this._follow(handlers, options, null);
  };

  /**
   * subscribe()'s machinery. `first`, when given, opens the first connection in place of
   * the GET stream (the fetch transport's message post); it is never shared.
   */
  ChatAppClient.prototype._follow = function (handlers, options, first) {
    var self = this;
    handlers = handlers || {};
    options = options || {};
    self.close();
    var sessionId = self.sessionId;
    var seen = {};
    var record = []; // what this tab delivered, for a tab that joins the share later
    var pause = RESUME_PAUSE_MS;
    var retry = RETRY_MS;
    var timer = null;
    var link = null;
    var share = null;
    var subscription = {
      source: null,
      lastEventId: options.after || null,
      leading: false,
      closed: false,
      close: function () {
        if (subscription.closed) return;
        subscription.closed = true;
        global.clearTimeout(timer);
        if (link) link.close();
        if (share) share.leave();
        if (self.subscription === subscription) self.subscription = null;
      }
    };
    self.subscription = subscription;

    function call(name, data, event) {
      if (typeof handlers[name] === "function") handlers[name](data, event);
    }

    /** One server event: from this tab's connection, or relayed by the leading tab. */
    function deliver(name, raw, id, event) {
      if (subscription.closed) return;
      var prev = subscription.lastEventId;
      // Ids are unique within a session: one seen before is never shown twice.
      if (id) {
        if (seen[id]) return;
        seen[id] = true;
        subscription.lastEventId = id;
      }
      var data;
      try {
        data = JSON.parse(raw);
      } catch (e) {
        return;
      }
      record.push({ name: name, data: raw, id: id });
      if (share && share.leading) share.relay({ name: name, data: raw, id: id, prev: prev });
      if (name === "end") subscription.close();
      call(name, data, event || messageEvent(name, raw, id));
    }

    function reconnecting(error) {
      if (share && share.leading) share.status("reconnecting");
      call("reconnecting", error);
    }

    function later(next, error) {
      reconnecting(error);
      timer = global.setTimeout(next, pause);
      pause = Math.min(pause * 2, RESUME_PAUSE_MAX_MS);
    }

    // What a connection tells its subscription.
    var sink = {
      open: function () {
        if (subscription.closed) return;
        pause = RESUME_PAUSE_MS;
        if (share && share.leading) share.status("open");
        call("open");
      },
      event: deliver,
      retry: function (ms) {
        retry = ms;
      },
      reconnecting: function () {
        if (!subscription.closed) reconnecting();
      },
      // The fetch transport's connection broke: restore it, as EventSource would.
      dropped: function () {
        if (subscription.closed) return;
        link = null;
        reconnecting();
        timer = global.setTimeout(connect, retry);
      },
      // The one-step post was answered without its stream: follow the GET stream.
      again: function () {
        if (!subscription.closed) connect();
      },
      gaveUp: function () {
        if (subscription.closed) return;
        link = null;
        check();
      }
    };

    function connect() {
      if (subscription.closed) return;
      var open = first || (self.transport === "fetch" ? fetchStream : eventSourceStream);
      first = null;
      link = open(self, sessionId, subscription.lastEventId, sink);
      subscription.source = link.source || null;
    }

    /** The connection gave up before `end`: follow the turn again if it goes on, else settle. */
    function check() {
      self.history().then(
        function (history) {
          if (subscription.closed) return;
          if (history && history.generating) {
            later(connect);
            return;
          }
          if (share && share.leading) share.settle(history);
          subscription.close();
          call("closed", history);
        },
        function (error) {
          if (subscription.closed) return;
          later(check, error);
        }
      );
    }

    var sharing = !first && self.transport === "eventsource" && self.shareTabs && global.ChatAppTabShare && global.ChatAppTabShare.available();
    if (!sharing) {
      subscription.leading = true;
      connect();
      return subscription;
    }
    share = global.ChatAppTabShare.join("chatapp:stream:" + new URL(self.apiBase, global.location.href).href + ":" + sessionId, {
      lead: function () {
        subscription.leading = true;
        connect();
      },
      event: function (message) {
        deliver(message.name, message.data, message.id, null);
      },
      status: function (state) {
        if (!subscription.closed) call(state === "open" ? "open" : "reconnecting");
      },
      settled: function (history) {
        if (subscription.closed) return;
        subscription.close();
        call("closed", history);
      },
      lastId: function () {
        return subscription.lastEventId;
      },
      seen: function (id) {
        return !!(id && seen[id]);
      },
      record: function (after) {
        for (var i = 0; after && i < record.length; i++) {
          if (record[i].id === after) return record.slice(i + 1);
        }
        return record.slice();
      }
    });
    return subscription;
  };

  function messageEvent(name, data, id) {
    try {
      return new MessageEvent(name, { data: data, lastEventId: id || "" });
    } catch (e) {
      return { type: name, data: data, lastEventId: id || "" };
    }
  }

  /** The stream on an EventSource, which reconnects by itself with Last-Event-ID. */
  function eventSourceStream(client, sessionId, after, sink) {
    var url = client._streamUrl(sessionId);
    if (after) url += (url.indexOf("?") < 0 ? "?" : "&") + "last_event_id=" + encodeURIComponent(after);
    var source = new EventSource(url, { withCredentials: client.credentials === "include" });
    var closed = false;
    source.addEventListener("open", function () {
      if (!closed) sink.open();
    });
    SERVER_EVENTS.forEach(function (name) {
      source.addEventListener(name, function (event) {
        // The server's `error` event has data; EventSource's own connection error has none.
        if (name === "error" && !("data" in event && typeof event.data === "string")) return;
        if (!closed) sink.event(name, event.data, event.lastEventId, event);
      });
    });
    source.addEventListener("error", function (event) {
      if ("data" in event && typeof event.data === "string") return;
      if (closed) return;
      if (source.readyState === EventSource.CLOSED) {
        // A 204, an HTTP error or a wrong content type: EventSource gives up.
        closed = true;
        sink.gaveUp();
      } else {
        sink.reconnecting();
      }
    });
    return {
      source: source,
      close: function () {
        closed = true;
        source.close();
      }
    };
  }

  /**
   * An event stream read from fetch()'s body (ssestream.js). `refused(response)` takes
   * an answer that is not a stream, or null when no answer came at all.
   */
  function streamRequest(url, init, sink, refused) {
    var opened = false;
    var reading = global.ChatAppSSE.read(url, init, {
      response: function (response) {
        var type = response.headers.get("Content-Type") || "";
        if (response.status === 200 && type.indexOf("text/event-stream") === 0) {
          opened = true;
          sink.open();
          return true;
        }
        refused(response);
        return false;
      },
      event: function (event) {
        if (reading.parser.retry !== null) sink.retry(reading.parser.retry);
        sink.event(event.event, event.data, event.id, null);
      },
      end: function () {
        if (opened) sink.dropped();
        else refused(null);
      }
    });
    return reading;
  }

  /** The GET stream on fetch(): it can send the client's headers and Last-Event-ID. */
  function fetchStream(client, sessionId, after, sink) {
    var headers = client._headers({ Accept: "text/event-stream" });
    if (after) headers["Last-Event-ID"] = after;
    var init = { method: "GET", headers: headers, credentials: client.credentials, cache: "no-store" };
    return streamRequest(client._streamUrl(sessionId), init, sink, function (response) {
      // No answer: try again as after a drop; a 204 or an error: check on the turn.
      if (response) sink.gaveUp();
      else sink.dropped();
    });
  }

  /** Post a message, then follow its reply. Resolves with {message_id, stream_url}. */
  ChatAppClient.prototype.send = function (text, handlers) {
    var self = this;
    if (self.transport === "fetch") return self._sendStreaming(text, handlers || {});
    return self
      .open()
      .then(function (id) {
        return self.request("POST", "/" + encodeURIComponent(id) + "/messages", { message: text }).then(function (data) {
          return self._noteStreamUrl(id, data);
        });
      })
      .then(function (data) {
        self.subscribe(handlers);
        return data;
      });
  };

  /**
   * send() on the fetch transport: one request posts the message and answers with the
   * reply's stream; a drop resumes on the GET stream. Resolves at the reply's `start`.
   */
  ChatAppClient.prototype._sendStreaming = function (text, handlers) {
    var self = this;
    return self.open().then(function (sessionId) {
      return new Promise(function (resolve, reject) {
        var settled = false;
        function settle(ok, value) {
          if (settled) return;
          settled = true;
          (ok ? resolve : reject)(value);
        }
        var own = {};
        for (var name in handlers) own[name] = handlers[name];
        own.start = function (data, event) {
          settle(true, { message_id: data.message_id, stream_url: self._streamUrl(sessionId) });
          if (handlers.start) handlers.start(data, event);
        };
        own.closed = function (history) {
          settle(true, { message_id: null, stream_url: self._streamUrl(sessionId) });
          if (handlers.closed) handlers.closed(history);
        };
        var url = self.apiBase + "/" + encodeURIComponent(sessionId) + "/messages";
        var init = {
          method: "POST",
          credentials: self.credentials,
          headers: self._headers({ Accept: "text/event-stream", "Content-Type": "application/json" }),
          body: JSON.stringify({ message: text })
        };
        var subscription = self._follow(own, {}, function (client, id, after, sink) {
          return streamRequest(url, init, sink, function (response) {
            if (!response) {
              // The message may not have reached the server: the caller decides.
              subscription.close();
              settle(false, networkError());
            } else if (response.ok) {
              // JSON instead of the stream (a proxy dropped Accept): follow the GET stream.
              response.json().then(
                function (data) {
                  self._noteStreamUrl(sessionId, data);
                  sink.again();
                },
                function () {
                  sink.again();
                }
              );
            } else {
              errorOf(response).then(function (error) {
                subscription.close();
                settle(false, error);
              });
            }
          });
        });
      });
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
