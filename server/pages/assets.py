"""The status page's stylesheet and its one script, served by the server itself (no CDN: the
page works offline) so the Content-Security-Policy can forbid inline code.

The script: while the page's <main> says a batch runs (data-refresh="1"), it fetches the page
again every few seconds and swaps in the new <main>. The HTML was escaped by the server, and a
DOMParser document runs no script, so nothing a user wrote can run here."""

REFRESH_MS = 5000  # a running batch's figures; each view is cached for a few seconds server-side (views.py)

SCRIPT = """\
"use strict";
(function () {
  function tick() {
    var main = document.querySelector("main");
    if (!main || main.dataset.refresh !== "1") { return; }
    fetch(location.href, {credentials: "same-origin", cache: "no-store", redirect: "manual"})
      .then(function (r) { if (r.status !== 200) { throw new Error(String(r.status)); } return r.text(); })
      .then(function (text) {
        var next = new DOMParser().parseFromString(text, "text/html").querySelector("main");
        if (next) { main.replaceWith(document.adoptNode(next)); }
      })
      .catch(function () { /* signed out or the server restarts: try again on the next tick */ })
      .then(function () { setTimeout(tick, REFRESH_MS); });
  }
  setTimeout(tick, REFRESH_MS);
})();
""".replace("REFRESH_MS", str(REFRESH_MS))

STYLE = """\
:root { --ink: #1d2330; --muted: #667085; --line: #e4e7ec; --accent: #2f6fed; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink); }
header { display: flex; justify-content: space-between; align-items: center; padding: 10px 24px;
         border-bottom: 1px solid var(--line); background: #f8f9fb; }
header .home { font-weight: 600; color: var(--ink); text-decoration: none; }
main { padding: 16px 24px; max-width: 1200px; }
h1 { font-size: 20px; margin: 8px 0 12px; word-break: break-all; }
h2 { font-size: 16px; margin: 24px 0 8px; }
a { color: var(--accent); }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: 12px; text-transform: uppercase; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.sub { color: var(--muted); font-size: 12px; word-break: break-all; }
.tag { display: inline-block; background: #eef2f9; border-radius: 3px; padding: 0 4px; margin-right: 4px; }
progress { width: 160px; height: 12px; vertical-align: middle; }
.big progress { width: 100%; max-width: 600px; height: 18px; }
.count { color: var(--muted); white-space: nowrap; }
.status { padding: 1px 6px; border-radius: 8px; background: #eef2f9; font-size: 12px; }
.s-in_progress, .s-finalizing, .s-validating, .s-queued { background: #dbe7ff; }
.s-completed, .s-ended { background: #d9f2e3; } .s-failed, .s-expired { background: #fde2e1; }
.s-cancelling, .s-canceling, .s-cancelled { background: #f3eadb; }
dl.figures, dl.meta { display: grid; grid-template-columns: max-content auto; gap: 4px 16px; }
dt { color: var(--muted); } dd { margin: 0; word-break: break-all; }
svg.chart { width: 100%; max-width: 600px; height: 28px; display: block; border-radius: 3px; }
svg.key { width: 10px; height: 10px; }
.b-load { fill: #f5b84d; } .b-useful { fill: #2fa36b; } .b-idle { fill: #9aa4b2; } .b-wasted { fill: #e0534a; }
table.legend { max-width: 600px; margin-top: 6px; }
form.login { display: flex; flex-direction: column; gap: 8px; max-width: 360px; }
input, button { font: inherit; padding: 6px 8px; }
.error { color: #b42318; }
"""
