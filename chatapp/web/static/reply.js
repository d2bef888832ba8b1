/*
 * An assistant reply in the log: drawn at once from history, or drawn as it streams in
 * (rendered again from its whole text once per animation frame, with a caret at the
 * end), then finished with its notes and its error. Text becomes DOM only through
 * ChatAppMarkdown (markdown.js) and ChatAppCodeBlocks (codeblocks.js).
 *
 *   ChatAppPage.addReply(view, text)   a finished reply, from history
 *   new ChatAppPage.Reply(view, retry) a reply about to stream in; retry() is offered
 *                                      on a retryable error and returns whether it ran
 */
(function (global) {
  "use strict";

  // The caret goes at the end of the last block, inside lists, quotes and code.
  var CARET_INSIDE = /^(UL|OL|LI|BLOCKQUOTE|PRE|DIV)$/;

  function render(content, text) {
    content.replaceChildren(ChatAppCodeBlocks.decorate(ChatAppMarkdown.render(text)));
  }

  function addReply(view, text) {
    var message = view.addMessage("assistant");
    render(message.content, text);
    return message;
  }

  function Reply(view, retry) {
    var message = view.addMessage("assistant");
    message.el.classList.add("is-generating");
    message.el.setAttribute("aria-busy", "true");
    this.view = view;
    this.el = message.el;
    this.content = message.content;
    this.retry = retry || null;
    this.text = "";
    this.messageId = null;
    this.error = null;
    this.done = false;
    this.frame = 0;
  }

  Reply.prototype.start = function (messageId) {
    this.messageId = messageId;
    this.el.setAttribute("data-message-id", messageId);
  };

  Reply.prototype.append = function (text) {
    var self = this;
    self.text += text;
    // One render per frame however fast tokens come; a hidden tab renders at the end.
    if (!self.frame) {
      self.frame = global.requestAnimationFrame(function () {
        self.frame = 0;
        self.render();
      });
    }
  };

  /** Keep the server's error; it is drawn when the reply finishes. */
  Reply.prototype.fail = function (error) {
    this.error = error;
  };

  /** Take the text the server kept, for a reply whose `end` never came. */
  Reply.prototype.settle = function (history) {
    var self = this;
    history.messages.forEach(function (message) {
      if (message.id === self.messageId) self.text = message.content;
    });
  };

  Reply.prototype.render = function () {
    if (this.frame) global.cancelAnimationFrame(this.frame);
    this.frame = 0;
    var stick = this.view.nearBottom();
    render(this.content, this.text);
    if (!this.done && this.text) {
      var last = this.content.lastElementChild;
      while (last && last.lastElementChild && CARET_INSIDE.test(last.tagName)) {
        last = last.lastElementChild;
      }
      var caret = document.createElement("span");
      caret.className = "caret";
      caret.setAttribute("aria-hidden", "true");
      (last && last.tagName !== "HR" && last.tagName !== "BUTTON" ? last : this.content).appendChild(caret);
    }
    if (stick) this.view.scrollToBottom();
  };

  /** Draw the finished reply; false when it was already finished. */
  Reply.prototype.finish = function (reason) {
    if (this.done) return false;
    this.done = true;
    this.render();
    this.el.classList.remove("is-generating");
    this.el.removeAttribute("aria-busy");
    if (reason === "cancelled") {
      this.note("Stopped");
      this.view.announce("Stopped.");
    } else if (reason === "length") {
      this.note("Cut off at the length limit");
    } else if (!this.text && !this.error) {
      this.note("No reply");
    }
    if (this.error) this.drawError(this.error);
    return true;
  };

  /** Stop drawing: the reply was removed or its chat left. */
  Reply.prototype.abandon = function () {
    this.done = true;
    if (this.frame) global.cancelAnimationFrame(this.frame);
    this.frame = 0;
  };

  Reply.prototype.note = function (text) {
    var note = document.createElement("p");
    note.className = "message-note";
    note.textContent = text;
    this.el.appendChild(note);
  };

  Reply.prototype.drawError = function (error) {
    var retry = this.retry;
    var box = document.createElement("div");
    box.className = "message-error";
    box.setAttribute("role", "alert");
    var text = document.createElement("span");
    text.textContent = error.message || "The reply failed.";
    box.appendChild(text);
    if (error.retryable && retry) {
      var button = document.createElement("button");
      button.type = "button";
      button.className = "button button-small";
      button.textContent = "Retry";
      button.addEventListener("click", function () {
        if (retry()) box.removeChild(button);
      });
      box.appendChild(button);
    }
    this.el.appendChild(box);
  };

  global.ChatAppPage = global.ChatAppPage || {};
  global.ChatAppPage.addReply = addReply;
  global.ChatAppPage.Reply = Reply;
})(window);
