/* chatapp client: open a session, send a message, follow its events, stop. */
(function (global) {
  "use strict";

  function ChatAppClient(apiBase) {
    this.apiBase = apiBase.replace(/\/$/, "");
    this.sessionId = null;
    this.source = null;
  }

  ChatAppClient.prototype.request = function (method, path, body) {
    var init = { method: method, credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(this.apiBase + path, init).then(function (response) {
      if (response.status === 204) return null;
      return response.json().then(function (data) {
        if (!response.ok) throw data.error;
        return data;
      });
    });
  };

  ChatAppClient.prototype.open = function () {
    var self = this;
    if (self.sessionId) return Promise.resolve(self.sessionId);
    return self.request("POST", "").then(function (data) {
      self.sessionId = data.session_id;
      return self.sessionId;
    });
  };

  ChatAppClient.prototype.subscribe = function (handlers) {
    var self = this;
    if (self.source) self.source.close();
    var source = new EventSource(self.apiBase + "/" + self.sessionId + "/stream");
    self.source = source;
    ["start", "token", "end"].forEach(function (name) {
      source.addEventListener(name, function (e) {
        var data = JSON.parse(e.data);
        if (name === "end") { source.close(); self.source = null; }
        if (handlers[name]) handlers[name](data);
      });
    });
    // The server's `error` event has data; EventSource's own connection error has none.
    source.addEventListener("error", function (e) {
      if (e.data && handlers.error) handlers.error(JSON.parse(e.data));
    });
    return source;
  };

  ChatAppClient.prototype.send = function (text, handlers) {
    var self = this;
    return self.open().then(function (id) {
      return self.request("POST", "/" + id + "/messages", { message: text });
    }).then(function () {
      return self.subscribe(handlers);
    });
  };

  ChatAppClient.prototype.stop = function () {
    if (!this.sessionId) return Promise.resolve(null);
    return this.request("POST", "/" + this.sessionId + "/cancel");
  };

  global.ChatAppClient = ChatAppClient;
})(window);
