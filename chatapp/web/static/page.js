/*
 * The chat page's wiring: the session's life (restore on reload, new chat, a chat gone
 * from the server), sending, Stop and Retry. Drawing is view.js's and reply.js's job;
 * talking to the server, reconnecting and resuming a stream are ChatAppClient's
 * (chatapp.js).
 */
(function (global) {
  "use strict";

  var ChatAppPage = global.ChatAppPage;
  var view = ChatAppPage.view(document);
  var client = new ChatAppClient(document.body.getAttribute("data-api-base"), { remember: true });

  var busy = false; // from sending a message until its reply ends
  var loading = false; // while the history of a reloaded chat is fetched
  var turn = null; // the reply being followed
  var older = null; // the cursor of the messages before those shown, when there are any

  function setBusy(value) {
    busy = value;
    view.setComposer(busy, loading);
  }

  function setLoading(value) {
    loading = value;
    view.setComposer(busy, loading);
  }

  /** Start drawing a reply to userText (null when not known: no Retry then). */
  function startReply(userText) {
    var retry = userText
      ? function () {
          if (busy || loading) return false;
          sendText(userText);
          return true;
        }
      : null;
    turn = new ChatAppPage.Reply(view, retry);
    setBusy(true);
    return turn;
  }

  function finishReply(reply, reason) {
    if (!reply.finish(reason)) return;
    if (turn === reply) turn = null;
    view.setReconnecting(false);
    setBusy(false);
  }

  function dropTurn() {
    if (turn) turn.abandon();
    turn = null;
  }

  /** The client's handlers for following `reply`. */
  function follow(reply) {
    return {
      start: function (data) {
        reply.start(data.message_id, data.cached);
        view.setModel(data.model);
      },
      reasoning: function (data) {
        reply.think(data.text);
      },
      token: function (data) {
        reply.append(data.text);
      },
      reset: function (data) {
        // The reply starts over: another server generates it again (`restarted`), or the
        // stream follows it from its start (`stale_resume`), which needs no word.
        if (!reply.owns(data.message_id)) return;
        reply.restart();
        if (data.reason === "restarted") view.announce("The reply is starting over.");
      },
      resumed: function (data) {
        if (!reply.owns(data.message_id)) return;
        reply.resume(data.after_chars);
        view.announce("The reply is being continued by another server.");
      },
      error: function (data) {
        reply.fail(data);
        view.announce("The reply failed: " + data.message);
      },
      end: function (data) {
        finishReply(reply, data.finish_reason);
      },
      open: function () {
        view.setReconnecting(false);
      },
      reconnecting: function () {
        // The client restores the stream by itself; the page only says so.
        if (!reply.done) view.setReconnecting(true);
      },
      closed: function (history) {
        // The turn is over but its `end` never came: the client hands over the history.
        view.setReconnecting(false);
        if (reply.done) return;
        if (!history) {
          sessionGone();
          return;
        }
        reply.settle(history);
        finishReply(reply, null);
      }
    };
  }

  function sessionGone() {
    older = null;
    dropTurn();
    view.clearLog();
    setBusy(false);
    view.setReconnecting(false);
    view.showNotice("This chat is no longer on the server, so a new one was started.");
  }

  // -- sending -----------------------------------------------------------------------

  function sendText(text, retried) {
    if (busy || loading) return;
    if (!retried) view.clearNotice();
    var user = view.addUserMessage(text);
    var reply = startReply(text);
    view.scrollToBottom();
    client.send(text, follow(reply)).then(null, function (error) {
      // The message never reached the server: take it back into the composer.
      reply.abandon();
      if (turn === reply) turn = null;
      view.removeMessage(reply.el);
      view.removeMessage(user.el);
      setBusy(false);
      if (error.status === 404 && !retried) {
        client.reset();
        sessionGone();
        sendText(text, true);
        return;
      }
      view.restoreInput(text);
      var action = error.retryable
        ? function () {
            view.takeInput(text);
            sendText(text);
          }
        : null;
      view.showNotice(error.message, action);
      view.announce(error.message);
    });
  }

  function stop() {
    if (!busy) return;
    client.stop().then(null, function (error) {
      view.showNotice("Could not stop the reply: " + error.message);
    });
  }

  function newChat() {
    older = null;
    if (busy) client.stop().then(null, function () {});
    dropTurn();
    client.reset();
    view.clearLog();
    view.setModel("");
    view.setReconnecting(false);
    view.clearNotice();
    setBusy(false);
    view.input.focus();
  }

  // -- reload ------------------------------------------------------------------------

  function restore() {
    if (!client.sessionId) {
      view.updateEmpty();
      return;
    }
    setLoading(true);
    client.history().then(
      function (history) {
        view.clearLog();
        setLoading(false);
        if (!history) return;
        var lastUser = null;
        history.messages.forEach(function (message) {
          if (message.role === "user") lastUser = message.content;
          draw(message);
        });
        older = history.cursor || null;
        if (history.generating) {
          // The stream replays the running turn from its start, then goes on live; how
          // long the model has been thinking is lost in the replay.
          var reply = startReply(lastUser);
          reply.untimed();
          client.subscribe(follow(reply));
        }
        view.scrollToBottom();
        fillScreen();
      },
      function (error) {
        setLoading(false);
        view.showNotice("Could not load this chat: " + error.message, restore);
      }
    );
  }

  function draw(message) {
    if (message.role === "user") return view.addUserMessage(message.content);
    if (message.role === "assistant") return ChatAppPage.addReply(view, message);
    return null;
  }

  // -- older messages: a page at a time, as the reader scrolls up --------------------

  var OLDER_WITHIN_PX = 400;
  var fetchingOlder = false;

  function scroller() {
    return document.scrollingElement || document.documentElement;
  }

  function loadOlder() {
    if (!older || fetchingOlder) return;
    var cursor = older;
    var sessionId = client.sessionId;
    fetchingOlder = true;
    client.history({ before: cursor }).then(
      function (page) {
        fetchingOlder = false;
        // A new chat (or a reload of this one) since the request: its answer is stale.
        if (!page || client.sessionId !== sessionId || older !== cursor) return;
        older = page.cursor || null;
        var root = scroller();
        var height = root.scrollHeight;
        var log = document.getElementById("log");
        var first = log.firstChild;
        page.messages.forEach(function (message) {
          var drawn = draw(message);
          if (drawn && first) log.insertBefore(drawn.el, first);
        });
        // What the reader was looking at stays where it was.
        root.scrollTop += root.scrollHeight - height;
        fillScreen();
      },
      function () {
        fetchingOlder = false;
      }
    );
  }

  /** Load older pages until the log fills the screen, so there is something to scroll. */
  function fillScreen() {
    var root = scroller();
    if (root.scrollHeight <= root.clientHeight + OLDER_WITHIN_PX) loadOlder();
  }

  global.addEventListener(
    "scroll",
    function () {
      if (scroller().scrollTop < OLDER_WITHIN_PX) loadOlder();
    },
    { passive: true }
  );

  // -- wiring ------------------------------------------------------------------------

  view.form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = view.input.value;
    if (!text.trim() || busy || loading) return;
    view.input.value = "";
    view.autosize();
    sendText(text);
  });

  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && busy) {
      event.preventDefault();
      stop();
    }
  });

  view.stopButton.addEventListener("click", stop);
  view.newChatButton.addEventListener("click", newChat);

  for (var i = 0; i < view.suggestions.length; i++) {
    view.suggestions[i].addEventListener("click", function (event) {
      view.input.focus();
      sendText(event.currentTarget.textContent);
    });
  }

  restore();
})(window);
