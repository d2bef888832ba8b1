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
          if (message.role === "user") {
            lastUser = message.content;
            view.addUserMessage(message.content);
          } else if (message.role === "assistant") {
            ChatAppPage.addReply(view, message);
          }
        });
        if (history.generating) {
          // The stream replays the running turn from its start, then goes on live; how
          // long the model has been thinking is lost in the replay.
          var reply = startReply(lastUser);
          reply.untimed();
          client.subscribe(follow(reply));
        }
        view.scrollToBottom();
      },
      function (error) {
        setLoading(false);
        view.showNotice("Could not load this chat: " + error.message, restore);
      }
    );
  }

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
