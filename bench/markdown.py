"""The Markdown renderer under adversarial input, in Chromium, next to marked and markdown-it.

``bench/markdown`` (which installs the peers with npm into ``bench/.node``) or
``.venv/bin/python -m bench.markdown [--sizes 32000,1000000] [--repeat 5] [--write]``.

Each input is one delimiter pattern repeated to the size (emphasis, underscores,
brackets, link openers, backticks, tildes), next to plain words of the same size. Each is
rendered to DOM in headless Chromium: chatapp's ``ChatAppMarkdown.render`` (DOM nodes),
marked and markdown-it (their HTML parsed into a detached element, so each builds the
same kind of DOM). Times are medians of ``--repeat`` runs in one page. The bound checked
is chatapp's own: every adversarial input at every size within ``--bound`` times the plain
text of that size (exit status 1 otherwise). ``--write`` puts the table in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "chatapp" / "web" / "static"
NODE = ROOT / "bench" / ".node" / "node_modules"
PEERS = {
    "marked": (NODE / "marked" / "lib" / "marked.umd.js", "text => marked.parse(text)"),
    "markdown-it": (NODE / "markdown-it" / "dist" / "browser" / "markdown-it.umd.min.js", "(() => { const md = markdownit(); return text => md.render(text); })()"),
}
PATTERNS = {
    "plain words": "lorem ipsum ",
    "emphasis `*a `": "*a ",
    "underscores `_a `": "_a ",
    "brackets `[a `": "[a ",
    "link openers `[a](`": "[a](",
    "backticks ``` ``a ` ```": "``a `",
    "tildes `~~a `": "~~a ",
}
MARK_START, MARK_END = "<!-- bench:markdown:start -->", "<!-- bench:markdown:end -->"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]

TIME_ONE = """
([name, text, repeat]) => {
  const render = window.__renderers[name];
  const times = [];
  for (let i = 0; i < repeat; i++) {
    const started = performance.now();
    render(text);
    times.push(performance.now() - started);
  }
  return times;
}
"""

SETUP = """
(peers) => {
  window.__renderers = {
    chatapp: text => { const div = document.createElement("div"); div.appendChild(ChatAppMarkdown.render(text)); return div; },
  };
  for (const [name, make] of Object.entries(peers)) {
    const toHtml = eval(make);
    // The peers give HTML; parsing it into a detached element builds their DOM.
    window.__renderers[name] = text => { const div = document.createElement("div"); div.innerHTML = toHtml(text); return div; };
  }
}
"""


def make_input(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def run(sizes: list[int], repeat: int) -> dict[tuple[str, int], dict[str, float]]:
    from playwright.sync_api import sync_playwright

    results: dict[tuple[str, int], dict[str, float]] = {}
    peers = {name: make for name, (path, make) in PEERS.items() if path.is_file()}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page()
        page.goto("about:blank")
        page.add_script_tag(path=str(STATIC / "markdown.js"))
        for name in peers:
            page.add_script_tag(path=str(PEERS[name][0]))
        page.evaluate(SETUP, peers)
        for size in sizes:
            for label, unit in PATTERNS.items():
                text = make_input(unit, size)
                row = {}
                for renderer in ["chatapp", *peers]:
                    times = page.evaluate(TIME_ONE, [renderer, text, repeat])
                    row[renderer] = statistics.median(times)
                results[(label, size)] = row
                print(f"{size:>9,} {label:<28} " + "  ".join(f"{k} {v:9.1f} ms" for k, v in row.items()), file=sys.stderr, flush=True)
        browser.close()
    return results


def table(results: dict[tuple[str, int], dict[str, float]], sizes: list[int], renderers: list[str]) -> str:
    lines = [
        "| input | size | " + " | ".join(f"{r} ms" for r in renderers) + " | chatapp × its plain text |",
        "|---|---|" + "---|" * len(renderers) + "---|",
    ]
    for size in sizes:
        plain = results[("plain words", size)]["chatapp"]
        for label in PATTERNS:
            row = results[(label, size)]
            cells = " | ".join(f"{row[r]:,.1f}" if r in row else "–" for r in renderers)
            lines.append(f"| {label} | {size:,} | {cells} | {row['chatapp'] / plain:.1f}× |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="32000,1000000", help="input sizes in characters, comma-separated")
    parser.add_argument("--repeat", type=int, default=5, help="renders per input and renderer (the median counts)")
    parser.add_argument("--bound", type=float, default=20.0, help="the most an adversarial input may take, in multiples of plain text")
    parser.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = run(sizes, args.repeat)
    renderers = ["chatapp", *[name for name, (path, _) in PEERS.items() if path.is_file()]]
    text = table(results, sizes, renderers)
    print(text)
    worst = max(results[(label, size)]["chatapp"] / results[("plain words", size)]["chatapp"] for label in PATTERNS for size in sizes)
    verdict = f"Worst adversarial input: {worst:.1f}× the plain text of its size (bound {args.bound:g}×)."
    print(verdict)
    if args.write:
        path = ROOT / "BENCHMARKS.md"
        document = path.read_text()
        start, end = document.index(MARK_START) + len(MARK_START), document.index(MARK_END)
        command = f"`bench/markdown --sizes {args.sizes} --repeat {args.repeat} --write`"
        path.write_text(document[:start] + f"\n\n{command}, medians of {args.repeat} renders:\n\n{text}\n\n{verdict}\n\n" + document[end:])
    return 0 if worst <= args.bound else 1


if __name__ == "__main__":
    sys.exit(main())
