"""The report page: an HTML skeleton, the page's style and script (package
resources `page.css` and `page.js`, inlined), and the data, escaped so that
nothing in it can end the script element or run.

The page asks for nothing over the network: its Content-Security-Policy
(`default-src 'none'`) allows only the one inline script and style it holds,
by their SHA-256 hashes, so even markup that slipped into the page could
neither load nor run anything.
"""
from __future__ import annotations

import base64
import hashlib
import html
from importlib import resources

# What the data may not hold raw inside <script>: `<` could start `</script>`
# or `<!--`, `>` and `&` are escaped as well for HTML's sake, and U+2028/U+2029
# end a line in older JavaScript. In JSON text they only appear inside strings,
# where the \u escape keeps the same value.
_SCRIPT_ESCAPES = ((b"<", b"\\u003c"), (b">", b"\\u003e"), (b"&", b"\\u0026"),
                   ("\u2028".encode(), b"\\u2028"), ("\u2029".encode(), b"\\u2029"))

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src '{script_hash}'; style-src '{style_hash}'; img-src data:; base-uri 'none'; form-action 'none'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<header><h1 id="title">{title}</h1><div class="sub"><span id="generator"></span> · <span id="redaction"></span></div></header>
<noscript>This report is drawn by its script: open it in a browser with JavaScript on.</noscript>
<section><h2>Overview</h2><dl class="facts" id="facts"></dl></section>
<section><h2>Sessions</h2><div class="muted">One bar per session, from its open to its close, coloured by how it ended (green: the client, orange: the server, grey: the relay, red: an error, blue: still open); a dashed red edge marks lost records or an error. Click a bar to see that session.</div>
<div id="timeline-box"><svg id="timeline"></svg></div></section>
<form id="filter" autocomplete="off">
<label>class <select id="f-class"><option value="-1">all</option></select></label>
<label>side <select id="f-side"><option value="-1">both</option><option value="0">client</option><option value="1">server</option></select></label>
<label>session <select id="f-session"><option value="-1">all</option></select></label>
<label>text <input id="f-text" type="search" placeholder="search messages"></label>
<label>scale <select id="f-scale"><option value="rows">one row per message</option><option value="10">time, 10 px/s</option><option value="100">time, 100 px/s</option><option value="1000">time, 1000 px/s</option></select></label>
<span id="scale-note" class="muted"></span><span id="count" class="muted"></span>
</form>
<section><h2>Ladder</h2>
<div class="split"><div id="ladder"><div id="spacer"></div><svg id="ladder-svg"></svg></div>
<div id="detail"><span class="muted">Click a message to see it.</span></div></div></section>
<section><h2>Latency (request commandid to reply replyid, as ctistat)</h2>
<table id="latency-table"><thead><tr><th>class</th><th>count</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>max ms</th><th>no reply</th><th>no reply expected</th></tr></thead><tbody></tbody></table>
<div class="plots"><div><div class="plot-title">latency over time (ms, by request time)</div><canvas id="scatter" class="plot"></canvas></div>
<div><div class="plot-title">distribution: share of replies within a latency (log scale)</div><canvas id="cdf" class="plot"></canvas></div></div>
<p id="unanswered-note"></p><ul id="unanswered"></ul></section>
<section><h2>Rate</h2><label>show <select id="rate-what"><option value="messages">messages/s</option><option value="bytes">bytes/s</option></select></label> <span class="muted">per side over time; red lines: records lost</span>
<div><canvas id="rate" class="plot"></canvas></div></section>
<script id="data" type="application/json">"""

TAIL = """</script>
<script>{script}</script>
</body>
</html>
"""


def resource(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text("utf-8")


def escape_for_script(data: bytes) -> bytes:
    """JSON text made safe to sit inside a <script> element."""
    for raw, escaped in _SCRIPT_ESCAPES:
        if raw in data:
            data = data.replace(raw, escaped)
    return data


def _hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def build(document: bytes, title: str) -> list[bytes]:
    """The page, in pieces to write one after the other (the data is large)."""
    script, style = resource("page.js"), resource("page.css")
    assert "</" not in script and "</" not in style  # they end their elements otherwise
    head = TEMPLATE.format(script_hash=_hash(script), style_hash=_hash(style),
                           title=html.escape(title), style=style)
    return [head.encode(), escape_for_script(document), TAIL.format(script=script).encode()]
