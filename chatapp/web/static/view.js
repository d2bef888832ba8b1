/*
 * The chat page's view: draws the log, the composer, the connection and model badges,
 * the notice and what screen readers announce. It holds no chat state: page.js says
 * what to show. The composer's own keys, the skip link and the notice's buttons are
 * wired here, as they need nothing else.
 *
 *   ChatAppPage.view(document) -> the view of the page in that document
 */
(function (global) {
  "use strict";

  var STICK_PX = 96; // this close to the bottom, the log follows a growing reply
  var COMPOSER_MAX_PX = 240;

  function view(doc) {
    function byId(id) {
      return doc.getElementById(id);
    }

    var conversation = byId("conversation");
    var log = byId("log");
    var empty = byId("empty");
    var form = byId("composer");
    var input = byId("message");
    var sendButton = byId("send");
    var stopButton = byId("stop");
    var connection = byId("connection");
    var modelBadge = byId("model");
    var notice = byId("notice");
    var noticeText = byId("notice-text");
    var noticeRetry = byId("notice-retry");
    var announcer = byId("announcer");
    var noticeAction = null;

    function root() {
      return doc.scrollingElement || doc.documentElement;
    }

    var self = {
      form: form,
      input: input,
      stopButton: stopButton,
      newChatButton: byId("new-chat"),
      suggestions: doc.querySelectorAll(".suggestion"),

      announce: function (text) {
        // Clearing first makes a repeated message be announced again.
        announcer.textContent = "";
        global.setTimeout(function () {
          announcer.textContent = text;
        }, 50);
      },

      nearBottom: function () {
        var r = root();
        return r.scrollHeight - r.scrollTop - r.clientHeight < STICK_PX;
      },

      scrollToBottom: function () {
        var r = root();
        r.scrollTop = r.scrollHeight;
      },

      updateEmpty: function () {
        empty.hidden = log.children.length > 0;
        conversation.classList.toggle("is-empty", empty.hidden === false);
      },

      /** busy: a reply is on its way (Stop instead of Send); loading: history is. */
      setComposer: function (busy, loading) {
        sendButton.disabled = busy || loading;
        sendButton.hidden = busy;
        stopButton.hidden = !busy;
        stopButton.disabled = !busy;
        form.classList.toggle("is-busy", busy);
        // A button that disappears must not take the keyboard focus with it.
        if ((busy && doc.activeElement === sendButton) || (!busy && doc.activeElement === stopButton)) {
          input.focus();
        }
      },

      setReconnecting: function (value) {
        connection.hidden = !value;
      },

      setModel: function (name) {
        modelBadge.textContent = name || "";
        modelBadge.hidden = !name;
      },

      /** Show text above the composer, with a Retry button when there is an action. */
      showNotice: function (text, action) {
        noticeText.textContent = text;
        noticeAction = action || null;
        noticeRetry.hidden = !action;
        notice.hidden = false;
      },

      clearNotice: function () {
        notice.hidden = true;
        noticeAction = null;
      },

      autosize: function () {
        input.style.height = "auto";
        input.style.height = Math.min(input.scrollHeight, COMPOSER_MAX_PX) + "px";
      },

      /** Put text back in the composer unless the user has typed something new. */
      restoreInput: function (text) {
        if (input.value) return;
        input.value = text;
        self.autosize();
      },

      /** Empty the composer if it still holds exactly this text. */
      takeInput: function (text) {
        if (input.value !== text) return;
        input.value = "";
        self.autosize();
      },

      /** Append an empty message to the log: {el, content}. */
      addMessage: function (role) {
        var article = doc.createElement("article");
        article.className = "message message-" + role;
        article.setAttribute("data-role", role);
        article.setAttribute("aria-label", role === "user" ? "You" : "Assistant");
        var content = doc.createElement("div");
        content.className = role === "user" ? "message-content" : "message-content markdown";
        article.appendChild(content);
        log.appendChild(article);
        self.updateEmpty();
        return { el: article, content: content };
      },

      addUserMessage: function (text) {
        var message = self.addMessage("user");
        message.content.textContent = text;
        return message;
      },

      removeMessage: function (el) {
        if (el.parentNode === log) log.removeChild(el);
        self.updateEmpty();
      },

      clearLog: function () {
        log.replaceChildren();
        self.updateEmpty();
      }
    };

    input.addEventListener("keydown", function (event) {
      // keyCode 229: an input method is composing; its Enter picks a word, not sends.
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
        event.preventDefault();
        if (typeof form.requestSubmit === "function") form.requestSubmit();
        else form.dispatchEvent(new Event("submit", { cancelable: true }));
      }
    });
    input.addEventListener("input", self.autosize);

    doc.querySelector(".skip-link").addEventListener("click", function (event) {
      event.preventDefault();
      input.focus();
    });

    noticeRetry.addEventListener("click", function () {
      var action = noticeAction;
      self.clearNotice();
      if (action) action();
    });
    byId("notice-close").addEventListener("click", self.clearNotice);

    return self;
  }

  global.ChatAppPage = global.ChatAppPage || {};
  global.ChatAppPage.view = view;
})(window);
