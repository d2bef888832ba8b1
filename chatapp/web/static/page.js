/*
 * The chat page: the conversation, the composer, and the reply as it streams in.
 * Talks to the server only through ChatAppClient (chatapp.js) and renders replies
 * only through ChatAppMarkdown (markdown.js).
 */
(function () {
  "use strict";

  function byId(id) {
    return document.getElementById(id);
  }

  var client = new ChatAppClient(document.body.getAttribute("data-api-base"), { remember: true });
  var conversation = byId("conversation");
  var log = byId("log");
  var empty = byId("empty");
  var form = byId("composer");
  var input = byId("message");
  var sendButton = byId("send");
  var stopButton = byId("stop");
  var newChatButton = byId("new-chat");
  var connection = byId("connection");
  var modelBadge = byId("model");
  var notice = byId("notice");
  var noticeText = byId("notice-text");
  var noticeRetry = byId("notice-retry");
  var announcer = byId("announcer");

  var busy = false; // from sending a message until its reply ends
  var loading = false; // while the history of a reloaded chat is fetched
  var turn = null; // the reply being followed
  var noticeAction = null;

  // -- small helpers -----------------------------------------------------------------

  function announce(text) {
    // Clearing first makes a repeated message be announced again.
    announcer.textContent = "";
    window.setTimeout(function () {
      announcer.textContent = text;
    }, 50);
  }

  function nearBottom() {
    var root = document.scrollingElement || document.documentElement;
    return root.scrollHeight - root.scrollTop - root.clientHeight < 96;
  }

  function scrollToBottom() {
    var root = document.scrollingElement || document.documentElement;
    root.scrollTop = root.scrollHeight;
  }

  function updateEmpty() {
    empty.hidden = log.children.length > 0;
    conversation.classList.toggle("is-empty", empty.hidden === false);
  }

  function updateComposer() {
    var blocked = busy || loading;
    sendButton.disabled = blocked;
    sendButton.hidden = busy;
    stopButton.hidden = !busy;
    stopButton.disabled = !busy;
    form.classList.toggle("is-busy", busy);
    // A button that disappears must not take the keyboard focus with it.
    if ((busy && document.activeElement === sendButton) || (!busy && document.activeElement === stopButton)) {
      input.focus();
    }
  }

  function setBusy(value) {
    busy = value;
    updateComposer();
  }

  function setReconnecting(value) {
    connection.hidden = !value;
  }

  function setModel(name) {
    modelBadge.textContent = name || "";
    modelBadge.hidden = !name;
  }

  function showNotice(text, action) {
    noticeText.textContent = text;
    noticeAction = action || null;
    noticeRetry.hidden = !action;
    notice.hidden = false;
  }

  function clearNotice() {
    notice.hidden = true;
    noticeAction = null;
  }

  function autosize() {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight, 240) + "px";
  }

  // -- messages ----------------------------------------------------------------------

  function addMessage(role) {
    var article = document.createElement("article");
    article.className = "message message-" + role;
    article.setAttribute("data-role", role);
    article.setAttribute("aria-label", role === "user" ? "You" : "Assistant");
    var content = document.createElement("div");
    content.className = role === "user" ? "message-content" : "message-content markdown";
    article.appendChild(content);
    log.appendChild(article);
    updateEmpty();
    return { el: article, content: content };
  }

  function addUserMessage(text) {
    var message = addMessage("user");
    message.content.textContent = text;
    return message;
  }

  function copyCode(button, pre) {
    var text = pre.textContent;
    function done(label) {
      button.textContent = label;
      window.setTimeout(function () {
        button.textContent = "Copy";
      }, 1500);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(
        function () {
          done("Copied");
        },
        function () {
          done("Copy failed");
        }
      );
    } else {
      // No clipboard API outside secure contexts: select the code for Ctrl+C.
      var range = document.createRange();
      range.selectNodeContents(pre);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      done("Selected");
    }
  }

  /** Wrap each code block with its language and a Copy button. */
  function decorateCode(content) {
    var blocks = content.querySelectorAll("pre");
    for (var i = 0; i < blocks.length; i++) {
      var pre = blocks[i];
      var wrap = document.createElement("div");
      wrap.className = "code-block";
      var bar = document.createElement("div");
      bar.className = "code-bar";
      var lang = document.createElement("span");
      lang.textContent = pre.getAttribute("data-lang") || "code";
      var copy = document.createElement("button");
      copy.type = "button";
      copy.className = "code-copy";
      copy.textContent = "Copy";
      copy.addEventListener("click", copyCode.bind(null, copy, pre));
      bar.appendChild(lang);
      bar.appendChild(copy);
      pre.parentNode.insertBefore(wrap, pre);
      wrap.appendChild(bar);
      wrap.appendChild(pre);
    }
  }

  function renderMarkdown(content, text) {
    content.replaceChildren(ChatAppMarkdown.render(text));
    decorateCode(content);
  }

  function addAssistantMessage(text) {
    var message = addMessage("assistant");
    renderMarkdown(message.content, text);
    return message;
  }

  // -- the reply being generated ------------------------------------------------------

  function startReply(userText) {
    var message = addMessage("assistant");
    message.el.classList.add("is-generating");
    message.el.setAttribute("aria-busy", "true");
    turn = {
      el: message.el,
      content: message.content,
      userText: userText,
      text: "",
      messageId: null,
      lastEventId: null,
      error: null,
      frame: 0,
      done: false
    };
    return turn;
  }

  function renderReply(t) {
    if (t.frame) window.cancelAnimationFrame(t.frame);
    t.frame = 0;
    var stick = nearBottom();
    renderMarkdown(t.content, t.text);
    if (!t.done && t.text) {
      // The caret goes at the end of the last block, inside lists and code.
      var last = t.content.lastElementChild;
      while (last && last.lastElementChild && /^(UL|OL|LI|BLOCKQUOTE|PRE|DIV)$/.test(last.tagName)) {
        last = last.lastElementChild;
      }
      var caret = document.createElement("span");
      caret.className = "caret";
      caret.setAttribute("aria-hidden", "true");
      (last && last.tagName !== "HR" && last.tagName !== "BUTTON" ? last : t.content).appendChild(caret);
    }
    if (stick) scrollToBottom();
  }

  function scheduleRender(t) {
    // One render per frame however fast tokens come; a hidden tab renders at the end.
    if (!t.frame) {
      t.frame = window.requestAnimationFrame(function () {
        t.frame = 0;
        renderReply(t);
      });
    }
  }

  function addNote(t, text) {
    var note = document.createElement("p");
    note.className = "message-note";
    note.textContent = text;
    t.el.appendChild(note);
  }

  function addError(t, error) {
    var box = document.createElement("div");
    box.className = "message-error";
    box.setAttribute("role", "alert");
    var text = document.createElement("span");
    text.textContent = error.message || "The reply failed.";
    box.appendChild(text);
    if (error.retryable && t.userText) {
      var retry = document.createElement("button");
      retry.type = "button";
      retry.className = "button button-small";
      retry.textContent = "Retry";
      retry.addEventListener("click", function () {
        if (busy) return;
        box.removeChild(retry);
        sendText(t.userText);
      });
      box.appendChild(retry);
    }
    t.el.appendChild(box);
  }

  function finishReply(t, reason) {
    if (t.done) return;
    t.done = true;
    renderReply(t);
    t.el.classList.remove("is-generating");
    t.el.removeAttribute("aria-busy");
    if (reason === "cancelled") {
      addNote(t, "Stopped");
      announce("Stopped.");
    } else if (reason === "length") {
      addNote(t, "Cut off at the length limit");
    } else if (!t.text && !t.error) {
      addNote(t, "No reply");
    }
    if (t.error) {
      addError(t, t.error);
    }
    if (turn === t) turn = null;
    setReconnecting(false);
    setBusy(false);
  }

  function handlersFor(t) {
    function track(event) {
      if (event && event.lastEventId) t.lastEventId = event.lastEventId;
    }
    return {
      start: function (data, event) {
        track(event);
        t.messageId = data.message_id;
        t.el.setAttribute("data-message-id", data.message_id);
        setModel(data.model);
      },
      token: function (data, event) {
        track(event);
        t.text += data.text;
        scheduleRender(t);
      },
      error: function (data, event) {
        track(event);
        t.error = data;
        announce("The reply failed: " + data.message);
      },
      end: function (data, event) {
        track(event);
        finishReply(t, data.finish_reason);
      },
      open: function () {
        setReconnecting(false);
      },
      reconnecting: function () {
        if (!t.done) setReconnecting(true);
      },
      closed: function () {
        setReconnecting(false);
        if (!t.done) reconcile(t);
      }
    };
  }

  /** The stream stopped without `end`: settle the reply from history, or follow again. */
  function reconcile(t) {
    client.history().then(
      function (history) {
        if (t.done || turn !== t) return;
        if (!history) {
          sessionGone();
          return;
        }
        if (history.generating) {
          window.setTimeout(function () {
            if (!t.done && turn === t) client.subscribe(handlersFor(t), { after: t.lastEventId });
          }, 1000);
          return;
        }
        history.messages.forEach(function (message) {
          if (message.id === t.messageId) t.text = message.content;
        });
        finishReply(t, null);
      },
      function (error) {
        showNotice(error.message, function () {
          reconcile(t);
        });
      }
    );
  }

  function sessionGone() {
    if (turn) turn.done = true;
    turn = null;
    log.replaceChildren();
    updateEmpty();
    setBusy(false);
    setReconnecting(false);
    showNotice("This chat is no longer on the server, so a new one was started.");
  }

  // -- sending -----------------------------------------------------------------------

  function sendText(text, retried) {
    if (busy || loading) return;
    if (!retried) clearNotice();
    var user = addUserMessage(text);
    var t = startReply(text);
    setBusy(true);
    scrollToBottom();
    client.send(text, handlersFor(t)).then(null, function (error) {
      // The message never reached the server: take it back into the composer.
      t.done = true;
      if (turn === t) turn = null;
      log.removeChild(t.el);
      log.removeChild(user.el);
      updateEmpty();
      setBusy(false);
      if (error.status === 404 && !retried) {
        client.reset();
        sessionGone();
        sendText(text, true);
        return;
      }
      if (!input.value) {
        input.value = text;
        autosize();
      }
      var action = error.retryable
        ? function () {
            if (input.value === text) {
              input.value = "";
              autosize();
            }
            sendText(text);
          }
        : null;
      showNotice(error.message, action);
      announce(error.message);
    });
  }

  function stop() {
    if (!busy) return;
    client.stop().then(null, function (error) {
      showNotice("Could not stop the reply: " + error.message);
    });
  }

  function newChat() {
    if (busy) client.stop().then(null, function () {});
    if (turn) turn.done = true;
    turn = null;
    client.reset();
    log.replaceChildren();
    setModel("");
    setReconnecting(false);
    clearNotice();
    setBusy(false);
    updateEmpty();
    input.focus();
  }

  // -- reload ------------------------------------------------------------------------

  function restore() {
    if (!client.sessionId) {
      updateEmpty();
      return;
    }
    loading = true;
    updateComposer();
    client.history().then(
      function (history) {
        loading = false;
        log.replaceChildren();
        if (history) {
          var lastUser = null;
          history.messages.forEach(function (message) {
            if (message.role === "user") {
              lastUser = message.content;
              addUserMessage(message.content);
            } else if (message.role === "assistant") {
              addAssistantMessage(message.content);
            }
          });
          if (history.generating) {
            // The stream replays the running turn from its start, then goes on live.
            var t = startReply(lastUser);
            setBusy(true);
            client.subscribe(handlersFor(t));
          }
        }
        updateEmpty();
        updateComposer();
        scrollToBottom();
      },
      function (error) {
        loading = false;
        updateComposer();
        showNotice("Could not load this chat: " + error.message, restore);
      }
    );
  }

  // -- wiring ------------------------------------------------------------------------

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value;
    if (!text.trim() || busy || loading) return;
    input.value = "";
    autosize();
    sendText(text);
  });

  input.addEventListener("keydown", function (event) {
    // keyCode 229: an input method is composing; its Enter picks a word, not sends.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      if (typeof form.requestSubmit === "function") form.requestSubmit();
      else form.dispatchEvent(new Event("submit", { cancelable: true }));
    }
  });

  input.addEventListener("input", autosize);

  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && busy) {
      event.preventDefault();
      stop();
    }
  });

  document.querySelector(".skip-link").addEventListener("click", function (event) {
    event.preventDefault();
    input.focus();
  });

  stopButton.addEventListener("click", stop);
  newChatButton.addEventListener("click", newChat);

  noticeRetry.addEventListener("click", function () {
    var action = noticeAction;
    clearNotice();
    if (action) action();
  });
  byId("notice-close").addEventListener("click", clearNotice);

  var suggestions = document.querySelectorAll(".suggestion");
  for (var i = 0; i < suggestions.length; i++) {
    suggestions[i].addEventListener("click", function (event) {
      input.focus();
      sendText(event.currentTarget.textContent);
    });
  }

  restore();
})();
