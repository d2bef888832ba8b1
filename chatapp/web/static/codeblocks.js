/*
 * Code blocks of rendered Markdown: each gets a bar with its language and a Copy button.
 *
 * Works on what ChatAppMarkdown.render() returns (a fragment or an element holding it),
 * building DOM nodes only. Decorating twice leaves a block as it is.
 *
 *   ChatAppCodeBlocks.decorate(root) -> root, with each <pre> wrapped in a .code-block
 */
(function (global) {
  "use strict";

  var COPY = "Copy";
  var FEEDBACK_MS = 1500;

  function copy(button, pre) {
    function done(label) {
      button.textContent = label;
      global.setTimeout(function () {
        button.textContent = COPY;
      }, FEEDBACK_MS);
    }
    if (navigator.clipboard && global.isSecureContext) {
      navigator.clipboard.writeText(pre.textContent).then(
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
      var selection = global.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      done("Selected");
    }
  }

  function decorate(root) {
    var blocks = root.querySelectorAll("pre");
    for (var i = 0; i < blocks.length; i++) {
      var pre = blocks[i];
      var parent = pre.parentNode;
      if (parent.nodeType === 1 && parent.classList.contains("code-block")) continue;
      var wrap = document.createElement("div");
      wrap.className = "code-block";
      var bar = document.createElement("div");
      bar.className = "code-bar";
      var lang = document.createElement("span");
      lang.textContent = pre.getAttribute("data-lang") || "code";
      var button = document.createElement("button");
      button.type = "button";
      button.className = "code-copy";
      button.textContent = COPY;
      button.addEventListener("click", copy.bind(null, button, pre));
      bar.appendChild(lang);
      bar.appendChild(button);
      parent.insertBefore(wrap, pre);
      wrap.appendChild(bar);
      wrap.appendChild(pre);
    }
    return root;
  }

  global.ChatAppCodeBlocks = { decorate: decorate };
})(window);
