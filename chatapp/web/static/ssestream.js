/*
 * An event stream read with fetch(): the incremental parser of the HTML standard's
 * "Interpreting an event stream" (section 9.2.6), and a reader of a Response body.
 *
 *   var parser = new ChatAppSSE.Parser(function (event) { ... event.event, event.data, event.id });
 *   parser.push(uint8Array); ... parser.end();
 *
 *   var reading = ChatAppSSE.read(url, fetchInit, {
 *     response: function (response) { return true; },  // false: do not read this body
 *     event: function (event) { ... },
 *     end: function (error) { ... }                      // the body ended (error: it broke)
 *   });
 *   reading.close();
 *
 * Network chunks split anywhere: inside a UTF-8 character, between the CR and LF of a
 * line end, inside a field. The decoder keeps a split character until it is whole, and a
 * CR at the end of a chunk ends its line at once while a LF opening the next is skipped.
 * Plain ES5 with no dependencies, like chatapp.js.
 */
(function (global) {
  "use strict";

  var CR = "\r";
  var LF = "\n";

  function Parser(onEvent) {
    this.onEvent = onEvent;
    // fatal: false turns broken bytes into U+FFFD, as EventSource does; the decoder
    // drops a leading byte order mark by itself.
    this.decoder = new TextDecoder("utf-8");
    this.buffer = "";
    this.afterCR = false;
    this.data = [];
    this.hasData = false;
    this.eventType = "";
    /** The last event id seen; it carries over to later events, as the standard says. */
    this.lastEventId = "";
    /** The reconnection time the server asked for, in ms, or null. */
    this.retry = null;
  }

  /** Feed bytes (a Uint8Array) or already decoded text. */
  Parser.prototype.push = function (chunk) {
    var text = typeof chunk === "string" ? chunk : this.decoder.decode(chunk, { stream: true });
    if (!text) return;
    if (this.afterCR) {
      // The CR that ended the last chunk ended its line; a LF right after it is the
      // same line end.
      this.afterCR = false;
      if (text.charAt(0) === LF) text = text.slice(1);
    }
    this.buffer += text;
    this._lines();
  };

  /** The stream ended: an event without its blank line is dropped, as the standard says. */
  Parser.prototype.end = function () {
    this.push(this.decoder.decode());
    this.buffer = "";
    this.data = [];
    this.hasData = false;
    this.eventType = "";
  };

  Parser.prototype._lines = function () {
    var buffer = this.buffer;
    var start = 0;
    for (var i = 0; i < buffer.length; i++) {
      var ch = buffer.charAt(i);
      if (ch !== CR && ch !== LF) continue;
      this._line(buffer.slice(start, i));
      if (ch === CR) {
        if (i + 1 === buffer.length) {
          this.afterCR = true;
        } else if (buffer.charAt(i + 1) === LF) {
          i++;
        }
      }
      start = i + 1;
    }
    this.buffer = buffer.slice(start);
  };

  Parser.prototype._line = function (line) {
    if (line === "") {
      this._dispatch();
      return;
    }
    if (line.charAt(0) === ":") return; // a comment, such as the heartbeat
    var colon = line.indexOf(":");
    var field = colon < 0 ? line : line.slice(0, colon);
    var value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.charAt(0) === " ") value = value.slice(1);
    if (field === "data") {
      this.data.push(value);
      this.hasData = true;
    } else if (field === "event") {
      this.eventType = value;
    } else if (field === "id") {
      if (value.indexOf("\0") < 0) this.lastEventId = value;
    } else if (field === "retry") {
      if (/^[0-9]+$/.test(value)) this.retry = parseInt(value, 10);
    }
  };

  Parser.prototype._dispatch = function () {
    var type = this.eventType || "message";
    var data = this.data.join(LF);
    var hasData = this.hasData;
    this.data = [];
    this.hasData = false;
    this.eventType = "";
    // A block without data (only retry, say) dispatches nothing.
    if (!hasData) return;
    this.onEvent({ event: type, data: data, id: this.lastEventId });
  };

  /** fetch(url, init) and parse its body as it arrives; returns {close()}. */
  function read(url, init, on) {
    var controller = typeof AbortController === "function" ? new AbortController() : null;
    var closed = false;
    var reader = null;
    var parser = new Parser(function (event) {
      if (!closed) on.event(event);
    });
    var request = {};
    for (var key in init) if (Object.prototype.hasOwnProperty.call(init, key)) request[key] = init[key];
    if (controller) request.signal = controller.signal;

    function finish(error) {
      if (closed) return;
      closed = true;
      on.end(error || null);
    }

    fetch(url, request).then(
      function (response) {
        if (closed) return;
        if (!on.response(response, parser) || !response.body) {
          closed = true;
          return;
        }
        reader = response.body.getReader();
        function pump() {
          return reader.read().then(function (step) {
            if (closed) return;
            if (step.done) {
              parser.end();
              finish(null);
              return;
            }
            parser.push(step.value);
            return pump();
          });
        }
        return pump().then(null, function (error) {
          finish(error);
        });
      },
      function (error) {
        finish(error);
      }
    );

    return {
      parser: parser,
      close: function () {
        closed = true;
        if (controller) controller.abort();
        else if (reader) reader.cancel().then(null, function () {});
      }
    };
  }

  global.ChatAppSSE = { Parser: Parser, read: read };
})(window);
