/*
 * A small Markdown renderer for untrusted model text.
 *
 * It builds DOM nodes with createElement and textContent only, never parsing HTML, so HTML in
 * the text is shown as text and can never run. Links keep only http, https and mailto
 * URLs. A reply is rendered again from its whole text on every token, so a tag or a
 * fence split across tokens is judged on the complete text, never half-way.
 *
 * Supported: fenced code blocks, inline code, headings, paragraphs with line breaks,
 * bullet and numbered lists (nested by indentation), block quotes, rules, **strong**,
 * *emphasis*, ~~strike~~, [links](https://...), <https://...> and bare http(s) URLs.
 *
 *   ChatAppMarkdown.render(text) -> DocumentFragment
 *   ChatAppMarkdown.safeUrl(url) -> the URL, or null when it is not http, https or mailto
 */
(function (global) {
  "use strict";

  var MAX_DEPTH = 8;
  var FENCE = /^ {0,3}(`{3,}|~{3,})[ \t]*([^`\s]*)/;
  // The closing #s and trailing blanks are taken off by headingText(), not by the
  // pattern: a lazy group before them made a long line of spaces quadratic.
  var HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*))?$/;
  var RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
  var QUOTE = /^ {0,3}> ?/;
  var LIST = /^( *)([-*+]|\d{1,9}[.)])([ \t]+|$)(.*)$/;
  var ESCAPABLE = /[\\`*_{}\[\]()#+\-.!<>~|"'&]/;
  // Sticky: each matches at exactly lastIndex, never searching the rest of the text.
  var URL_START = /https?:\/\/[^\s<>"']+/y;
  var AUTOLINK = /<((?:https?:\/\/|mailto:)[^\s<>]+)>/iy;

  function el(tag, text) {
    var node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function safeUrl(raw) {
    var value = String(raw || "").trim();
    if (!/^(https?:\/\/|mailto:)/i.test(value)) return null;
    var url;
    try {
      url = new URL(value);
    } catch (e) {
      return null;
    }
    if (url.protocol !== "http:" && url.protocol !== "https:" && url.protocol !== "mailto:") return null;
    return url.href;
  }

  function link(href, children) {
    var a = el("a");
    a.href = href;
    a.rel = "noopener noreferrer nofollow";
    a.target = "_blank";
    children(a);
    return a;
  }

  // -- inline ----------------------------------------------------------------------------

  function isSpace(ch) {
    return ch === undefined || ch === "" || /\s/.test(ch);
  }

  function isWord(ch) {
    return ch !== undefined && /[0-9A-Za-z\u00C0-\uFFFF]/.test(ch);
  }

  // Every lookup below is answered from indexes built in one pass over the text (and
  // only when the text has the character at all), and each is asked with positions that
  // only move forward, so a line of a million unmatched `*`, `[`, backticks or `~` costs
  // one pass, not a scan to the end per delimiter (which made the renderer quadratic:
  // seconds at 32k characters, a frozen tab at a megabyte).

  var DELIMS = ["*", "**", "_", "__", "~~"];

  /** The positions where each emphasis delimiter may close, in order. */
  function closerPositions(text) {
    var found = { "*": [], "**": [], _: [], __: [], "~~": [] };
    for (var at = 0; at < text.length; at++) {
      var ch = text.charAt(at);
      if (ch !== "*" && ch !== "_" && ch !== "~") continue;
      if (isSpace(text.charAt(at - 1))) continue;
      var doubled = text.charAt(at + 1) === ch;
      // A closer is not followed by its own character, and `_` not by a letter either.
      if (ch !== "~" && !doubled && !(ch === "_" && isWord(text.charAt(at + 1)))) found[ch].push(at);
      if (doubled && text.charAt(at + 2) !== ch && !(ch === "_" && isWord(text.charAt(at + 2)))) found[ch + ch].push(at);
    }
    return found;
  }

  /** Maximal runs of backticks by length: {length: [start, ...]}. */
  function backtickRuns(text) {
    var runs = {};
    for (var at = text.indexOf("`"); at !== -1; at = text.indexOf("`", at)) {
      var end = at;
      while (text.charAt(end) === "`") end++;
      (runs[end - at] = runs[end - at] || []).push(at);
      at = end;
    }
    return runs;
  }

  /**
   * Each `open` bracket's partner: {position of open: position of close}. `\` escapes the
   * next character; for parentheses, an unescaped line break ends every open one.
   */
  function partners(text, open, close, lineBound) {
    var found = {};
    var stack = [];
    for (var i = 0; i < text.length; i++) {
      var ch = text.charAt(i);
      if (ch === "\\") i++;
      else if (ch === open) stack.push(i);
      else if (ch === close && stack.length) found[stack.pop()] = i;
      else if (ch === "\n" && lineBound) stack.length = 0;
    }
    return found;
  }

  /** The first of the sorted `positions` at or after `from`, walking `cursor` forward. */
  function nextAt(positions, cursor, from) {
    while (cursor.i < positions.length && positions[cursor.i] < from) cursor.i++;
    return cursor.i < positions.length ? positions[cursor.i] : -1;
  }

  /** Lookups over one text, each index built on first use. */
  function Scanner(text) {
    this.text = text;
    this.closers = null;
    this.closerCursors = {};
    this.runs = null;
    this.runCursors = {};
    this.brackets = null;
    this.parens = null;
  }

  /** Where the emphasis opened before `from` with `delim` closes, or -1. */
  Scanner.prototype.closer = function (delim, from) {
    if (!this.closers) {
      this.closers = closerPositions(this.text);
      for (var k = 0; k < DELIMS.length; k++) this.closerCursors[DELIMS[k]] = { i: 0 };
    }
    // Not at `from` itself: emphasis is never empty.
    return nextAt(this.closers[delim], this.closerCursors[delim], from + 1);
  };

  /** Where a run of exactly `length` backticks starts at or after `from`, or -1. */
  Scanner.prototype.backticks = function (length, from) {
    if (!this.runs) this.runs = backtickRuns(this.text);
    var starts = this.runs[length];
    if (!starts) return -1;
    var cursor = this.runCursors[length] || (this.runCursors[length] = { i: 0 });
    return nextAt(starts, cursor, from);
  };

  /** The index of the `]` closing the `[` at `open`, or -1. */
  Scanner.prototype.closingBracket = function (open) {
    if (!this.brackets) this.brackets = partners(this.text, "[", "]", false);
    var close = this.brackets[open];
    return close === undefined ? -1 : close;
  };

  /** The destination of `(url "title")` starting at `open`: {url, end} or null. */
  Scanner.prototype.destination = function (open) {
    var text = this.text;
    if (text.charAt(open) !== "(") return null;
    if (!this.parens) this.parens = partners(text, "(", ")", true);
    var close = this.parens[open];
    if (close === undefined) return null;
    var inner = text.slice(open + 1, close).trim();
    var match = /^<([^<>]*)>|^(\S*)/.exec(inner);
    return { url: match[1] !== undefined ? match[1] : match[2], end: close + 1 };
  };

  var TRAILING_PUNCTUATION = ".,;:!?*_~";

  function trimUrl(url) {
    // Sentence punctuation after a bare URL is not part of it; nor is an unmatched ")".
    var end = url.length;
    while (end > 0 && TRAILING_PUNCTUATION.indexOf(url.charAt(end - 1)) !== -1) end--;
    var opens = 0;
    var closes = 0;
    for (var i = 0; i < end; i++) {
      if (url.charAt(i) === "(") opens++;
      else if (url.charAt(i) === ")") closes++;
    }
    while (end > 0 && url.charAt(end - 1) === ")" && opens < closes) {
      end--;
      closes--;
    }
    return url.slice(0, end);
  }

  /** Append the inline content of `text` to `parent`. */
  function inline(parent, text, depth, inLink) {
    var scan = new Scanner(text);
    var buffer = "";
    function flush() {
      if (buffer) parent.appendChild(document.createTextNode(buffer));
      buffer = "";
    }
    var i = 0;
    while (i < text.length) {
      var ch = text.charAt(i);

      if (ch === "\\" && i + 1 < text.length) {
        var next = text.charAt(i + 1);
        if (next === "\n") {
          flush();
          parent.appendChild(el("br"));
          i += 2;
          continue;
        }
        if (ESCAPABLE.test(next)) {
          buffer += next;
          i += 2;
          continue;
        }
      }

      if (ch === "\n") {
        flush();
        parent.appendChild(el("br"));
        i++;
        continue;
      }

      if (ch === "`") {
        var length = 1;
        while (text.charAt(i + length) === "`") length++;
        // The closing run must be exactly as long as the opening one.
        var close = scan.backticks(length, i + length);
        if (close === -1) {
          buffer += text.slice(i, i + length);
          i += length;
          continue;
        }
        var code = text.slice(i + length, close).replace(/\n/g, " ");
        if (/^ .*[^ ].* $/.test(code)) code = code.slice(1, -1);
        flush();
        parent.appendChild(el("code", code));
        i = close + length;
        continue;
      }

      if (ch === "[" && !inLink && depth < MAX_DEPTH) {
        var end = scan.closingBracket(i);
        var dest = end === -1 ? null : scan.destination(end + 1);
        if (dest) {
          var label = text.slice(i + 1, end);
          var href = safeUrl(dest.url);
          flush();
          if (href) {
            parent.appendChild(
              link(href, function (a) {
                inline(a, label, depth + 1, true);
              })
            );
          } else {
            // An unsafe or relative URL: keep the words, drop the link.
            inline(parent, label, depth + 1, inLink);
          }
          i = dest.end;
          continue;
        }
      }

      if (ch === "<" && !inLink) {
        AUTOLINK.lastIndex = i;
        var auto = AUTOLINK.exec(text);
        var autoHref = auto && safeUrl(auto[1]);
        if (autoHref) {
          flush();
          parent.appendChild(
            link(autoHref, function (a) {
              a.textContent = auto[1];
            })
          );
          i += auto[0].length;
          continue;
        }
      }

      if ((ch === "h" || ch === "H") && !inLink && !isWord(text.charAt(i - 1))) {
        URL_START.lastIndex = i;
        var bare = URL_START.exec(text);
        if (bare) {
          var raw = trimUrl(bare[0]);
          var bareHref = safeUrl(raw);
          if (bareHref) {
            flush();
            parent.appendChild(
              link(bareHref, function (a) {
                a.textContent = raw;
              })
            );
            i += raw.length;
            continue;
          }
        }
      }

      if ((ch === "*" || ch === "_" || ch === "~") && depth < MAX_DEPTH) {
        var delim = null;
        var tag = null;
        if (ch === "~") {
          if (text.charAt(i + 1) === "~") {
            delim = "~~";
            tag = "del";
          }
        } else if (text.charAt(i + 1) === ch) {
          delim = ch + ch;
          tag = "strong";
        } else {
          delim = ch;
          tag = "em";
        }
        var opensWord = ch !== "_" || !isWord(text.charAt(i - 1));
        if (delim && opensWord && !isSpace(text.charAt(i + delim.length))) {
          var closer = scan.closer(delim, i + delim.length);
          if (closer !== -1) {
            flush();
            var node = el(tag);
            inline(node, text.slice(i + delim.length, closer), depth + 1, inLink);
            parent.appendChild(node);
            i = closer + delim.length;
            continue;
          }
        }
        // No partner: the run is plain text.
        var plain = delim || ch;
        buffer += plain;
        i += plain.length;
        continue;
      }

      buffer += ch;
      i++;
    }
    flush();
  }

  // -- blocks ----------------------------------------------------------------------------

  /** `text` without the characters of `chars` at its end (a loop: a regex anchored at the
   * end retries from every blank of a long run, which is quadratic). */
  function trimEnd(text, chars) {
    var end = text.length;
    while (end > 0 && chars.indexOf(text.charAt(end - 1)) !== -1) end--;
    return text.slice(0, end);
  }

  /** A heading's text without its trailing blanks and closing #s. */
  function headingText(raw) {
    var text = trimEnd(raw, " \t");
    var hashes = trimEnd(text, "#");
    // Closing #s count only after a blank: "C#" and "#" keep theirs.
    if (hashes.length < text.length && / |\t/.test(hashes.charAt(hashes.length - 1))) {
      text = trimEnd(hashes, " \t");
    }
    return text;
  }

  function indentOf(line) {
    return /^ */.exec(line.replace(/\t/g, "    "))[0].length;
  }

  function isBlank(line) {
    return /^\s*$/.test(line);
  }

  function startsBlock(line) {
    return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || LIST.test(line);
  }

  function fence(lines, i, parent) {
    var open = FENCE.exec(lines[i]);
    var marker = open[1];
    var indent = indentOf(lines[i]);
    var body = [];
    var j = i + 1;
    // An unclosed fence (a reply still streaming) runs to the end of the text.
    while (j < lines.length) {
      var close = /^ {0,3}(`{3,}|~{3,})[ \t]*$/.exec(lines[j]);
      if (close && close[1].charAt(0) === marker.charAt(0) && close[1].length >= marker.length) {
        j++;
        break;
      }
      body.push(indent ? lines[j].replace(new RegExp("^ {0," + indent + "}"), "") : lines[j]);
      j++;
    }
    var pre = el("pre");
    var code = el("code", body.join("\n"));
    var lang = open[2];
    if (lang && /^[\w+#.-]{1,32}$/.test(lang)) {
      pre.setAttribute("data-lang", lang);
      code.className = "language-" + lang;
    }
    pre.appendChild(code);
    parent.appendChild(pre);
    return j;
  }

  function list(lines, i, parent, depth) {
    var first = LIST.exec(lines[i]);
    var base = first[1].length;
    var ordered = /\d/.test(first[2]);
    var listEl = el(ordered ? "ol" : "ul");
    if (ordered) {
      var start = parseInt(first[2], 10);
      if (start !== 1) listEl.setAttribute("start", String(start));
    }
    var items = [];
    var current = null;
    var contentIndent = 0;
    var loose = false;
    var j = i;
    while (j < lines.length) {
      var line = lines[j];
      var m = LIST.exec(line);
      if (m && m[1].length <= base + 1 && /\d/.test(m[2]) === ordered && !RULE.test(line)) {
        current = [m[4]];
        items.push(current);
        contentIndent = m[1].length + m[2].length + Math.min(Math.max(m[3].length, 1), 4);
        j++;
        continue;
      }
      if (isBlank(line)) {
        var k = j + 1;
        while (k < lines.length && isBlank(lines[k])) k++;
        if (k >= lines.length) break;
        var nextMarker = LIST.exec(lines[k]);
        var sameList = nextMarker && nextMarker[1].length <= base + 1 && /\d/.test(nextMarker[2]) === ordered;
        if (indentOf(lines[k]) >= contentIndent || sameList) {
          loose = true;
          for (; j < k; j++) current.push("");
          continue;
        }
        break;
      }
      if (indentOf(line) >= contentIndent) {
        current.push(line.replace(/\t/g, "    ").slice(contentIndent));
        j++;
        continue;
      }
      if (m && m[1].length > base) {
        // A nested list indented less than the text of its parent item.
        current.push(line.replace(/\t/g, "    ").slice(Math.min(indentOf(line), base + 2)));
        j++;
        continue;
      }
      if (!startsBlock(line) && !isBlank(lines[j - 1])) {
        current.push(line.trim()); // a lazy continuation line
        j++;
        continue;
      }
      break;
    }
    items.forEach(function (itemLines) {
      var li = el("li");
      blocks(itemLines, li, depth + 1);
      // A tight item holds its text directly, not in a paragraph.
      if (!loose && li.firstChild && li.firstChild.nodeName === "P") {
        var p = li.firstChild;
        while (p.firstChild) li.insertBefore(p.firstChild, p);
        li.removeChild(p);
      }
      listEl.appendChild(li);
    });
    parent.appendChild(listEl);
    return j;
  }

  function blocks(lines, parent, depth) {
    var i = 0;
    while (i < lines.length) {
      var line = lines[i];
      if (isBlank(line)) {
        i++;
        continue;
      }
      if (depth >= MAX_DEPTH) {
        // Too deeply nested to be meant: the rest is one paragraph of text.
        parent.appendChild(el("p", lines.slice(i).join("\n")));
        return;
      }
      if (FENCE.test(line)) {
        i = fence(lines, i, parent);
        continue;
      }
      var heading = HEADING.exec(line);
      if (heading) {
        var level = Math.min(heading[1].length + 2, 6);
        var h = el("h" + level);
        inline(h, headingText(heading[2] || ""), depth, false);
        parent.appendChild(h);
        i++;
        continue;
      }
      if (RULE.test(line)) {
        parent.appendChild(el("hr"));
        i++;
        continue;
      }
      if (QUOTE.test(line)) {
        var quoted = [];
        while (i < lines.length && QUOTE.test(lines[i])) {
          quoted.push(lines[i].replace(QUOTE, ""));
          i++;
        }
        var quote = el("blockquote");
        blocks(quoted, quote, depth + 1);
        parent.appendChild(quote);
        continue;
      }
      if (LIST.test(line) && !isBlank(LIST.exec(line)[4])) {
        i = list(lines, i, parent, depth);
        continue;
      }
      var para = [line.replace(/^ +/, "")];
      i++;
      while (i < lines.length && !isBlank(lines[i]) && !startsBlock(lines[i])) {
        para.push(lines[i].replace(/^ +/, ""));
        i++;
      }
      var p = el("p");
      inline(p, trimEnd(para.join("\n"), " "), depth, false);
      parent.appendChild(p);
    }
  }

  function render(text) {
    var fragment = document.createDocumentFragment();
    var lines = String(text || "").replace(/\r\n?/g, "\n").split("\n");
    blocks(lines, fragment, 0);
    return fragment;
  }

  global.ChatAppMarkdown = { render: render, safeUrl: safeUrl };
})(window);
