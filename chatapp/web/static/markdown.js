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
  var HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
  var RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
  var QUOTE = /^ {0,3}> ?/;
  var LIST = /^( *)([-*+]|\d{1,9}[.)])([ \t]+|$)(.*)$/;
  var ESCAPABLE = /[\\`*_{}\[\]()#+\-.!<>~|"'&]/;
  var URL_START = /https?:\/\/[^\s<>"']+/g;

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

  /** Where the emphasis opened at `from` with `delim` closes, or -1. */
  function findCloser(text, delim, from) {
    var at = text.indexOf(delim, from);
    while (at !== -1) {
      var before = text.charAt(at - 1);
      var after = text.charAt(at + delim.length);
      var ok = at > from && !isSpace(before) && after !== delim.charAt(0);
      if (ok && delim.charAt(0) === "_" && isWord(after)) ok = false;
      if (ok) return at;
      at = text.indexOf(delim, at + 1);
    }
    return -1;
  }

  /** The index of the `]` closing the `[` at `open`, or -1. */
  function closingBracket(text, open) {
    var depth = 0;
    for (var i = open; i < text.length; i++) {
      var ch = text.charAt(i);
      if (ch === "\\") i++;
      else if (ch === "[") depth++;
      else if (ch === "]" && --depth === 0) return i;
    }
    return -1;
  }

  /** The destination of `(url "title")` starting at `open`: {url, end} or null. */
  function destination(text, open) {
    if (text.charAt(open) !== "(") return null;
    var depth = 0;
    for (var i = open; i < text.length; i++) {
      var ch = text.charAt(i);
      if (ch === "\\") i++;
      else if (ch === "(") depth++;
      else if (ch === ")" && --depth === 0) {
        var inner = text.slice(open + 1, i).trim();
        var match = /^<([^<>]*)>|^(\S*)/.exec(inner);
        return { url: match[1] !== undefined ? match[1] : match[2], end: i + 1 };
      } else if (ch === "\n") return null;
    }
    return null;
  }

  function trimUrl(url) {
    // Sentence punctuation after a bare URL is not part of it; nor is an unmatched ")".
    var trimmed = url.replace(/[.,;:!?*_~]+$/, "");
    while (/\)$/.test(trimmed) && (trimmed.match(/\(/g) || []).length < (trimmed.match(/\)/g) || []).length) {
      trimmed = trimmed.slice(0, -1);
    }
    return trimmed;
  }

  /** Append the inline content of `text` to `parent`. */
  function inline(parent, text, depth, inLink) {
    var buffer = "";
    function flush() {
      if (buffer) parent.appendChild(document.createTextNode(buffer));
      buffer = "";
    }
    var i = 0;
    while (i < text.length) {
      var ch = text.charAt(i);
      var rest;

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
        var run = /^`+/.exec(text.slice(i))[0];
        var close = text.indexOf(run, i + run.length);
        // The closing run must be exactly as long as the opening one.
        while (close !== -1 && text.charAt(close + run.length) === "`") {
          var after = close + run.length;
          while (text.charAt(after) === "`") after++;
          close = text.indexOf(run, after);
        }
        if (close === -1) {
          buffer += run;
          i += run.length;
          continue;
        }
        var code = text.slice(i + run.length, close).replace(/\n/g, " ");
        if (/^ .*[^ ].* $/.test(code)) code = code.slice(1, -1);
        flush();
        parent.appendChild(el("code", code));
        i = close + run.length;
        continue;
      }

      if (ch === "[" && !inLink && depth < MAX_DEPTH) {
        var end = closingBracket(text, i);
        var dest = end === -1 ? null : destination(text, end + 1);
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
        var auto = /^<((?:https?:\/\/|mailto:)[^\s<>]+)>/i.exec(text.slice(i));
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
        if (bare && bare.index === i) {
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
        rest = text.slice(i);
        var delim = null;
        var tag = null;
        if (ch === "~") {
          if (rest.slice(0, 2) === "~~") {
            delim = "~~";
            tag = "del";
          }
        } else if (rest.charAt(1) === ch) {
          delim = ch + ch;
          tag = "strong";
        } else {
          delim = ch;
          tag = "em";
        }
        var opensWord = ch !== "_" || !isWord(text.charAt(i - 1));
        if (delim && opensWord && !isSpace(text.charAt(i + delim.length))) {
          var closer = findCloser(text, delim, i + delim.length);
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
        inline(h, heading[2] || "", depth, false);
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
      inline(p, para.join("\n").replace(/ +$/, ""), depth, false);
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
