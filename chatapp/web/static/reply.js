/*
 * An assistant reply in the log: drawn at once from history, or drawn as it streams in
 * (rendered again from its whole text once per animation frame, with a caret at the
 * end), then finished with its notes and its error. Text becomes DOM only through
 * ChatAppMarkdown (markdown.js) and ChatAppCodeBlocks (codeblocks.js).
 *
 * The model's thinking, when it shows any, goes in a "Thinking" block above the answer:
 * a <details> open while the model thinks, closed when the answer starts, whose summary
 * then says how long the thinking took (from the first to the last reasoning event, as
 * this page saw them; just "Thought" when that is unknown: from history, a cached reply,
 * or a reply picked up again after a reload, whose start is replayed at once).
 *
 * A reply can start over (the server's `reset`: another server generates it again, or the
 * stream replays it from its start): its answer and thinking are dropped, and it goes on
 * from empty. A reply continued by another server (`resumed`) gets a quiet seam: a thin
 * rule between the rendered blocks, after the block in which the other server took over.
 * It is put there after each render, never through the renderer and never inside a
 * block, so it cannot split a code block, a list or a paragraph, nor add to the text:
 * its words are the stylesheet's, and a copy of the reply is the model's text alone.
 *
 *   ChatAppPage.addReply(view, message) a finished reply, from history: {content,
 *                                       reasoning, finish_reason}, the last two optional
 *   new ChatAppPage.Reply(view, retry)  a reply about to stream in; retry() is offered
 *                                       on a retryable error and returns whether it ran
 */
(function (global) {
  "use strict";

  // The caret goes at the end of the last block, inside lists, quotes and code.
  var CARET_INSIDE = /^(UL|OL|LI|BLOCKQUOTE|PRE|DIV)$/;
  var SEAM = "resumed-marker";
  var SEAM_LABEL = "Reply continued by another server";

  var THINKING = "Thinking…";
  var NOTES = {
    cancelled: "Stopped",
    length: "Cut short: the reply reached the model's length limit.",
    // A reasoning model can spend its whole output budget before it answers.
    lengthThinking:
      "The model ran out of room while thinking, before it could answer. Try a shorter question, or a larger max tokens on the model server.",
    contentFilter: "The model server's content filter stopped this reply.",
    empty: "No reply",
    emptyThinking: "The model gave no answer after thinking."
  };

  function now() {
    return global.performance && global.performance.now ? global.performance.now() : Date.now();
  }

  function render(content, text) {
    content.replaceChildren(ChatAppCodeBlocks.decorate(ChatAppMarkdown.render(text)));
  }

  function addCaret(content) {
    var last = content.lastElementChild;
    // A seam is no text: the caret goes at the end of the block before it.
    while (last && last.classList.contains(SEAM)) last = last.previousElementSibling;
    while (last && last.lastElementChild && CARET_INSIDE.test(last.tagName)) {
      last = last.lastElementChild;
    }
    var caret = document.createElement("span");
    caret.className = "caret";
    caret.setAttribute("aria-hidden", "true");
    (last && last.tagName !== "HR" && last.tagName !== "BUTTON" ? last : content).appendChild(caret);
  }

  /** The length in UTF-16 units of the first `points` code points of text (at most all). */
  function codeUnits(text, points) {
    var at = 0;
    for (; points > 0 && at < text.length; points--) {
      var unit = text.charCodeAt(at);
      at += unit >= 0xd800 && unit <= 0xdbff && at + 1 < text.length ? 2 : 1;
    }
    return at;
  }

  /** The mark of where another server continued a reply: decorative, hidden from screen
   * readers (page.js announces it), its label in the stylesheet and its title. */
  function seamMarker() {
    var marker = document.createElement("div");
    marker.className = SEAM;
    marker.setAttribute("aria-hidden", "true");
    marker.title = SEAM_LABEL;
    marker.appendChild(document.createElement("span"));
    return marker;
  }

  /** Put each seam back between the blocks just rendered: before block `seam.before`. */
  function placeSeams(content, seams) {
    var blocks = Array.prototype.slice.call(content.childNodes);
    seams.forEach(function (seam) {
      content.insertBefore(seam.marker, blocks[seam.before] || null);
    });
  }

  /** "Thought for 12 s", "Thought for 2 min 5 s"; "Thought" when the time is unknown. */
  function thoughtFor(ms) {
    if (ms === null) return "Thought";
    var seconds = Math.round(ms / 1000);
    if (seconds < 1) return "Thought for <1 s";
    if (seconds < 60) return "Thought for " + seconds + " s";
    var rest = seconds % 60;
    return "Thought for " + Math.floor(seconds / 60) + " min" + (rest ? " " + rest + " s" : "");
  }

  /** A "Thinking" block put above the answer of a message: {el, summary, body}. */
  function addThinking(message, open) {
    var details = document.createElement("details");
    details.className = "thinking";
    details.open = open;
    var summary = document.createElement("summary");
    summary.className = "thinking-summary";
    var body = document.createElement("div");
    body.className = "thinking-body markdown";
    details.appendChild(summary);
    details.appendChild(body);
    message.el.insertBefore(details, message.content);
    return { el: details, summary: summary, body: body };
  }

  /** The note under a reply that ended this way, or null. */
  function noteFor(reason, text, reasoning) {
    if (reason === "cancelled") return NOTES.cancelled;
    if (reason === "length") return !text && reasoning ? NOTES.lengthThinking : NOTES.length;
    if (reason === "content_filter") return NOTES.contentFilter;
    return null;
  }

  function addNote(el, text) {
    var note = document.createElement("p");
    note.className = "message-note";
    note.textContent = text;
    el.appendChild(note);
  }

  function addReply(view, stored) {
    var message = view.addMessage("assistant");
    if (stored.reasoning) {
      var thinking = addThinking(message, false);
      thinking.summary.textContent = thoughtFor(null);
      render(thinking.body, stored.reasoning);
    }
    render(message.content, stored.content);
    // History that keeps how a reply ended gets the same notes as the live reply had.
    var note = noteFor(stored.finish_reason, stored.content, stored.reasoning);
    if (note) addNote(message.el, note);
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
    this.reasoning = "";
    this.thinking = null; // the "Thinking" block, once the model thinks
    this.thinkingNow = false; // the latest piece was thinking, not answer
    this.timed = true; // whether this page saw the thinking as it happened
    this.thoughtFirst = null;
    this.thoughtLast = null;
    this.seams = []; // where other servers continued the reply: {before, marker}
    this.messageId = null;
    this.error = null;
    this.done = false;
    this.frame = 0;
    this.dirtyThinking = false;
    this.dirtyAnswer = false;
  }

  /** cached: the server replays a stored reply at once, so its thinking time is unknown. */
  Reply.prototype.start = function (messageId, cached) {
    this.messageId = messageId;
    this.el.setAttribute("data-message-id", messageId);
    if (cached) this.timed = false;
  };

  /** The reply is followed from its start again (after a reload): its timing is unknown. */
  Reply.prototype.untimed = function () {
    this.timed = false;
  };

  Reply.prototype.think = function (text) {
    var at = now();
    if (this.thoughtFirst === null) this.thoughtFirst = at;
    this.thoughtLast = at;
    if (!this.thinking) {
      // Open while the model thinks; thinking between answer pieces stays out of the way.
      this.thinking = addThinking(this, !this.text);
    }
    if (!this.thinkingNow) {
      this.thinkingNow = true;
      this.el.classList.add("is-thinking");
      this.thinking.summary.textContent = THINKING;
      this.dirtyAnswer = true; // the caret moves up
    }
    this.reasoning += text;
    this.dirtyThinking = true;
    this.schedule();
  };

  Reply.prototype.append = function (text) {
    if (this.thinkingNow) this.thought(true);
    this.text += text;
    this.dirtyAnswer = true;
    this.schedule();
  };

  /** Whether an event about messageId is about this reply (a stray one is ignored). */
  Reply.prototype.owns = function (messageId) {
    return !messageId || !this.messageId || messageId === this.messageId;
  };

  /** The reply starts over: drop its answer, its thinking and its seams, go on from empty. */
  Reply.prototype.restart = function () {
    if (this.done) return;
    this.text = "";
    this.reasoning = "";
    if (this.thinking) {
      // Made again if the model thinks again, open as for a new reply.
      this.el.removeChild(this.thinking.el);
      this.thinking = null;
    }
    this.thinkingNow = false;
    this.el.classList.remove("is-thinking");
    this.thoughtFirst = this.thoughtLast = null;
    this.seams = [];
    this.dirtyThinking = false;
    // Drawn now, with the thinking block gone: the old answer never shows beside the new
    // state, and the empty reply gets its typing dots until the new text comes.
    this.dirtyAnswer = true;
    this.render();
  };

  /**
   * Another server continues the reply after its first `afterChars` code points: mark
   * the seam after the block they end in. Which block that is comes from rendering them
   * alone: the continuation either goes on in their last block or starts the next one,
   * so the mark goes before the block at that count in every later render.
   */
  Reply.prototype.resume = function (afterChars) {
    var at = codeUnits(this.text, afterChars);
    if (this.done || !at) return; // nothing before it: no seam to show
    var before = ChatAppMarkdown.render(this.text.slice(0, at)).childNodes.length;
    this.seams.push({ before: before, marker: seamMarker() });
    this.dirtyAnswer = true;
    this.schedule();
  };

  /** The thinking is over: say for how long, and close the block when the answer starts. */
  Reply.prototype.thought = function (answering) {
    this.thinkingNow = false;
    this.el.classList.remove("is-thinking");
    this.thinking.summary.textContent = thoughtFor(this.timed ? this.thoughtLast - this.thoughtFirst : null);
    if (answering && !this.text) this.thinking.el.open = false;
    this.dirtyThinking = true; // the caret moves down
  };

  Reply.prototype.schedule = function () {
    var self = this;
    // One render per frame however fast pieces come; a hidden tab renders at the end.
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

  /** Take the text (and thinking) the server kept, for a reply whose `end` never came. */
  Reply.prototype.settle = function (history) {
    var self = this;
    history.messages.forEach(function (message) {
      if (message.id !== self.messageId) return;
      self.text = message.content;
      if (message.reasoning && message.reasoning !== self.reasoning) {
        // Thinking this page did not see come in: how long it took is unknown.
        self.timed = false;
        if (!self.thinking) {
          self.thinking = addThinking(self, !self.text);
          self.thinking.summary.textContent = thoughtFor(null);
        }
        self.reasoning = message.reasoning;
      }
    });
    this.dirtyThinking = this.dirtyAnswer = true;
  };

  Reply.prototype.render = function () {
    if (this.frame) global.cancelAnimationFrame(this.frame);
    this.frame = 0;
    var stick = this.view.nearBottom();
    if (this.thinking && this.dirtyThinking) {
      render(this.thinking.body, this.reasoning);
      if (!this.done && this.thinkingNow) addCaret(this.thinking.body);
    }
    if (this.dirtyAnswer) {
      render(this.content, this.text);
      if (this.text && this.seams.length) placeSeams(this.content, this.seams);
      if (!this.done && !this.thinkingNow && this.text) addCaret(this.content);
    }
    this.dirtyThinking = this.dirtyAnswer = false;
    if (stick) this.view.scrollToBottom();
  };

  /** Draw the finished reply; false when it was already finished. */
  Reply.prototype.finish = function (reason) {
    if (this.done) return false;
    this.done = true;
    if (this.thinkingNow) this.thought(false);
    this.dirtyThinking = this.dirtyAnswer = true;
    this.render();
    this.el.classList.remove("is-generating");
    this.el.removeAttribute("aria-busy");
    var note = noteFor(reason, this.text, this.reasoning);
    if (!note && !this.text && !this.error) note = this.reasoning ? NOTES.emptyThinking : NOTES.empty;
    if (note) addNote(this.el, note);
    if (reason === "cancelled") this.view.announce("Stopped.");
    if (this.error) this.drawError(this.error);
    return true;
  };

  /** Stop drawing: the reply was removed or its chat left. */
  Reply.prototype.abandon = function () {
    this.done = true;
    if (this.frame) global.cancelAnimationFrame(this.frame);
    this.frame = 0;
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
