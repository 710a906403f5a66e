"""ctireport's page in a real browser: headless Chromium driven by selenium, from file://.

One browser for the module, one page load per scenario. Skipped, with one line
saying how to get them, where Chromium or its driver is not installed.
"""
import json
import os
import shutil
from pathlib import Path

import orjson
import pytest

from ctipipe.report import command as report_command
from ctipipe.stages import stats
from helpers import WAIT

DATA = Path(__file__).parent / "data"
DEMO = DATA / "demo-session.jsonl"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and os.path.exists(DRIVER)),
    reason="headless Chromium not found: apt-get install chromium chromium-driver")

WINDOW = (1400, 1000)


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={WINDOW[0]},{WINDOW[1]}", "--no-first-run",
                     "--disable-background-networking", "--disable-extensions"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(WAIT * 3)
    driver.set_script_timeout(WAIT)
    yield driver
    driver.quit()


def screenshot(browser, tmp_path: Path, name: str) -> None:
    """Save what the page looks like (to $CTIREPORT_SCREENSHOTS when set, to look at)."""
    folder = Path(os.environ.get("CTIREPORT_SCREENSHOTS", tmp_path))
    browser.save_screenshot(str(folder / name))


def write_report(tmp_path: Path, data: bytes, *args: str, name: str = "r.html") -> Path:
    source = tmp_path / (name + ".jsonl")
    source.write_bytes(data)
    out = tmp_path / name
    assert report_command.main([str(source), "-o", str(out), *args]) == 0
    return out


def open_page(browser, path: Path) -> None:
    browser.get_log("browser")  # forget what an earlier page said
    browser.get_log("performance")
    browser.get(path.as_uri())
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(browser, WAIT * 2).until(
        lambda d: d.execute_script("return document.body.dataset.ready === 'true'"))


def assert_quiet(browser) -> None:
    """No console message at error level, and no request beyond the page itself."""
    errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    assert errors == []
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    requests = [json.loads(entry["message"])["message"] for entry in browser.get_log("performance")]
    urls = [m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"]
    assert all(url.startswith("file://") for url in urls), urls
    assert len(urls) <= 1


def rows(browser) -> list[dict]:
    """The ladder's row elements: their kind and texts."""
    return browser.execute_script("""
        return [...document.querySelectorAll('#ladder .row')].map((g) => ({
            row: +g.dataset.row, kind: g.getAttribute('class').split(' ')[1],
            texts: [...g.querySelectorAll('text')].map((t) => t.textContent)}));""")


def expected_rows(data: bytes) -> list[tuple[str, str]]:
    """(kind, label) of the stream's messages and events, as the ladder shows them."""
    out = []
    for line in data.splitlines():
        record = json.loads(line)
        if "from" in record:
            message = record["msg"]
            label = " · ".join([message["class"]] + [message[key] for key in ("function", "listname")
                                                     if isinstance(message.get(key), str) and message[key]])
            out.append((record["from"], label))
        elif record.get("event") in ("open", "tls", "gap", "close", "error"):
            out.append(("event", None))
    return out


def test_the_demo_session(browser, tmp_path):
    data = DEMO.read_bytes()
    path = write_report(tmp_path, data)
    open_page(browser, path)
    assert_quiet(browser)
    policy = browser.execute_script(
        "return document.querySelector('meta[http-equiv=Content-Security-Policy]').content")
    assert policy.startswith("default-src 'none';")

    # the ladder lists the messages in order, with their sides and classes
    shown = rows(browser)
    expected = expected_rows(data)
    assert 10 < len(shown) < len(expected)  # only what is seen (and a little more)
    assert [r["row"] for r in shown] == list(range(len(shown)))
    for row, (kind, label) in zip(shown, expected):
        assert row["kind"] == kind
        if label is not None:
            assert label in row["texts"]

    # clicking a message shows its JSON: sorted keys, indented by 4, the password masked
    login = next(i for i, (kind, label) in enumerate(expected) if label == "login_pass")
    browser.execute_script(f"document.querySelector('#ladder .row[data-row=\"{login}\"] .bg')"
                           f".dispatchEvent(new MouseEvent('click', {{bubbles: true}}))")
    message = json.loads(data.splitlines()[[i for i, l in enumerate(data.splitlines())
                                             if b'"login_pass"' in l][0]])["msg"]
    message["password"] = "***"
    assert browser.find_element("id", "json").text == json.dumps(message, sort_keys=True, indent=4,
                                                                 ensure_ascii=False)

    # the latency table holds ctistat -m's figures for the same stream
    records = [orjson.loads(line) for line in data.splitlines()]
    [summary] = [json.loads(line) for line in _summaries(records)]
    table = browser.execute_script("""
        return [...document.querySelectorAll('#latency-table tbody tr')].map(
            (tr) => [...tr.cells].map((td) => td.textContent));""")
    cell = lambda v: "-" if v is None else f"{v:.3f}"
    assert table == [[name, str(row["count"]), cell(row["median_ms"]), cell(row["p95_ms"]),
                      cell(row["p99_ms"]), cell(row["max_ms"]), str(row["no_reply"]),
                      str(row["no_reply_expected"])]
                     for name, row in summary["latency"].items()]
    assert browser.execute_script(
        "return [...document.querySelectorAll('#latency-table th')].map((th) => th.textContent)"
    )[-2:] == ["no reply", "no reply expected"]
    # the demo's logout and second starttls are not answered by design: not listed as faults
    assert sum(row["no_reply_expected"] for row in summary["latency"].values()) == 2
    assert not any(row["no_reply"] for row in summary["latency"].values())
    assert browser.find_element("id", "unanswered-note").text == (
        "Every request got its reply, but for 2 that the protocol never answers (no reply expected).")
    assert browser.execute_script("return document.querySelectorAll('#unanswered li').length") == 0
    # the ladder and the message panel say so at the logout
    logout = next(i for i, (kind, label) in enumerate(expected) if label == "logout")
    browser.execute_script("const box = document.getElementById('ladder'); box.scrollTop = box.scrollHeight;")
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(browser, WAIT).until(lambda d: any(r["row"] == logout for r in rows(d)))
    [at_logout] = [r for r in rows(browser) if r["row"] == logout]
    assert "no reply expected" in at_logout["texts"] and "no reply" not in at_logout["texts"]
    assert browser.execute_script(f"""
        const text = [...document.querySelectorAll('#ladder .row[data-row="{logout}"] text')]
            .find((t) => t.textContent === 'no reply expected');
        return [text.getAttribute('class'), getComputedStyle(text).fill];""") == ["muted", "rgb(119, 119, 119)"]
    browser.execute_script(f"document.querySelector('#ladder .row[data-row=\"{logout}\"] .bg')"
                           f".dispatchEvent(new MouseEvent('click', {{bubbles: true}}))")
    assert "no reply expected" in browser.find_element("id", "detail").text
    browser.execute_script("document.getElementById('ladder').scrollTop = 0")

    # the filter narrows the ladder and the table together
    getlist = browser.execute_script(
        "return [...document.querySelectorAll('#f-class option')].find((o) => o.text.startsWith('getlist ')).value")
    browser.execute_script(f"const s = document.getElementById('f-class'); s.value = '{getlist}';"
                           "s.dispatchEvent(new Event('change'));")
    narrowed = rows(browser)
    assert narrowed and all(r["texts"][1].startswith("getlist") for r in narrowed)
    assert len(narrowed) == sum(1 for kind, label in expected if label and label.startswith("getlist"))
    assert [r[0] for r in browser.execute_script(
        "return [...document.querySelectorAll('#latency-table tbody tr')].map((tr) => [tr.cells[0].textContent])")
    ] == ["getlist"]
    browser.set_window_size(1200, 1500)
    browser.execute_script("document.getElementById('ladder').scrollIntoView()")
    screenshot(browser, tmp_path, "demo.png")
    browser.set_window_size(*WINDOW)
    assert_quiet(browser)


def _summaries(records):
    stat = stats.Stat(as_json=True)
    out = [stat.handle(record, b"") for record in records]
    out.append(stat.finish())
    return [line for chunk in out if chunk for line in chunk.splitlines()]


def sessions_stream(count: int, messages: int = 2) -> bytes:
    """`count` sessions of a request and its reply each, overlapping in time."""
    lines = []
    for conn in range(1, count + 1):
        t = 1000.0 + conn * 0.01
        lines.append({"ts": t, "conn": conn, "event": "open", "client": f"10.0.{conn >> 8}.{conn & 255}:4000",
                      "server": "xivo:5003"})
        for n in range(messages // 2):
            lines.append({"ts": t + 0.001, "conn": conn, "from": "client", "size": 40,
                          "msg": {"class": "getlist", "commandid": n}})
            lines.append({"ts": t + 0.002, "conn": conn, "from": "server", "size": 40,
                          "msg": {"class": "getlist", "replyid": n}})
        by = ("client", "server", "relay")[conn % 3]
        lines.append({"ts": t + 0.5, "conn": conn, "event": "close", "by": by,
                      "bytes": {"client": 40, "server": 40}, "reads": {"client": 1, "server": 1},
                      "duration": 0.5})
    lines.sort(key=lambda r: r["ts"])
    return b"".join(orjson.dumps(r) + b"\n" for r in lines)


def test_one_timeline_bar_per_session_and_a_click_opens_it(browser, tmp_path):
    path = write_report(tmp_path, sessions_stream(1000))
    open_page(browser, path)
    assert_quiet(browser)
    assert browser.execute_script("return document.querySelectorAll('#timeline .bar').length") == 1000
    browser.execute_script("document.querySelectorAll('#timeline .bar')[41]"
                           ".dispatchEvent(new MouseEvent('click', {bubbles: true}))")
    shown = rows(browser)
    assert len(shown) == 4 and browser.find_element("id", "f-session").get_attribute("value") == "41"
    assert "session 42" in browser.execute_script(
        "return document.querySelectorAll('#timeline .bar')[41].textContent")


def test_100000_messages_keep_few_row_elements_and_reach_the_last(browser, tmp_path):
    path = write_report(tmp_path, sessions_stream(1, messages=100_000))
    open_page(browser, path)
    assert_quiet(browser)
    first = rows(browser)
    assert 10 < len(first) < 100
    browser.execute_script("const box = document.getElementById('ladder'); box.scrollTop = box.scrollHeight;")
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(browser, WAIT).until(lambda d: rows(d)[-1]["row"] == 100_001)  # the close event
    last = rows(browser)
    assert len(last) < 100
    assert last[-2]["row"] == 100_000 and "getlist" in last[-2]["texts"]  # the last message
    # time-proportional scale: the same rows, spaced by their times
    browser.execute_script("const s = document.getElementById('f-scale'); s.value = '100';"
                           "s.dispatchEvent(new Event('change'));")
    assert 0 < len(rows(browser)) < 100


def test_only_requests_that_expect_a_reply_are_listed_without_one(browser, tmp_path):
    path = write_report(tmp_path, (DATA / "logout-and-unanswered-getlist.jsonl").read_bytes())
    open_page(browser, path)
    assert_quiet(browser)
    assert [r["texts"][1:3] for r in rows(browser) if r["kind"] == "client"] == [
        ["getlist · listid · users", "no reply"], ["logout", "no reply expected"]]
    assert browser.find_element("id", "unanswered-note").text == (
        "1 request without a reply, not counting 1 that the protocol never answers (no reply expected):")
    assert browser.execute_script(
        "return [...document.querySelectorAll('#unanswered li')].map((li) => li.textContent)"
    ) == ["session 1 +0.100000 s: getlist · listid · users"]


def test_a_finding_of_cticheck_is_a_marked_row_after_its_message(browser, tmp_path):
    from test_report import annotated
    path = write_report(tmp_path, annotated((DATA / "check-readme.jsonl").read_bytes()))
    open_page(browser, path)
    assert_quiet(browser)
    shown = rows(browser)
    login = next(i for i, r in enumerate(shown) if "login_pass" in r["texts"])
    assert shown[login + 1]["texts"][2].startswith(
        'check [L3]: client login_pass: protocol 2.3 expects "password", not "hashedpassword"; ')
    assert browser.execute_script("return [...document.querySelectorAll('#ladder .row.check')]"
                                  ".map((g) => +g.dataset.row)")[0] == shown[login + 1]["row"]
    assert "4 protocol findings (cticheck): L3 1, L6 1, M1 1, R1 1" in browser.find_element("id", "facts").text
    screenshot(browser, tmp_path, "findings.png")


HOSTILE = [
    "</script><script>window.__pwned = 1</script>",
    "<img src=x onerror=\"window.__pwned = 2\">",
    "javascript:window.__pwned = 3",
    "<svg onload=window.__pwned=4>",
    "\"><script>window.__pwned = 5</script>",
    "line\u2028separator\u2029paragraph",
    "\x1b[31mred\x1b[0m and \x07 bell",
    "bidi \u202eevil\u202c \u2066isolate\u2069",
    "<!-- comment",
]


def test_hostile_payloads_are_shown_as_text(browser, tmp_path):
    lines = [{"ts": 1.0, "event": "start", "stream": 1, "producer": HOSTILE[1]},
             {"ts": 1.0, "conn": 1, "event": "open", "client": HOSTILE[0], "server": HOSTILE[3]}]
    t = 1.0
    for n, payload in enumerate(HOSTILE):
        t += 0.01
        lines.append({"ts": t, "conn": 1, "from": "client", "size": 10,
                      "msg": {"class": payload, "function": payload, "commandid": n, payload: payload}})
        lines.append({"ts": t + 0.001, "conn": 1, "from": "server", "size": 10,
                      "raw": payload})
        lines.append({"ts": t + 0.002, "conn": 1, "from": "server", "size": 10,
                      "msg": {"class": payload, "replyid": n, "url": payload}})
    lines.append({"ts": t + 1, "conn": 1, "event": "close", "by": "client", "error": HOSTILE[4]})
    data = b"".join(orjson.dumps(r) + b"\n" for r in lines)
    path = write_report(tmp_path, data, "--title", HOSTILE[0])
    open_page(browser, path)
    assert browser.execute_script("return window.__pwned") is None
    assert browser.execute_script("return document.querySelectorAll('img, iframe, a[href], object, embed').length") == 0
    assert browser.execute_script("return document.scripts.length") == 2  # the data and ours
    body = browser.execute_script("""const shown = document.body.cloneNode(true);
        shown.querySelectorAll('script').forEach((s) => s.remove());
        return shown.textContent + document.title;""")
    assert "<img src=x onerror=\"window.__pwned = 2\">" in body  # as text
    assert "\u202e" not in body and "\x1b" not in body and "\u2028" not in body
    assert "bidi \\u202eevil\\u202c" in body and "\\u001b[31mred" in body
    texts = [t for row in rows(browser) for t in row["texts"]]
    assert any(text.startswith("<svg onload=window.__pwned=4> · <svg") for text in texts)
    browser.execute_script("document.querySelector('#ladder .row[data-row=\"1\"] .bg')"
                           ".dispatchEvent(new MouseEvent('click', {bubbles: true}))")
    shown = json.loads(browser.find_element("id", "json").get_attribute("textContent"))
    assert shown["class"] == HOSTILE[0]  # the same value, escapes and all
    browser.execute_script("const f = document.getElementById('f-text'); f.value = 'onerror';"
                           "f.dispatchEvent(new Event('input'));")
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(browser, WAIT).until(lambda d: len(rows(d)) == 3)
    assert browser.execute_script("return window.__pwned") is None
    browser.execute_script("document.getElementById('ladder').scrollIntoView()")
    screenshot(browser, tmp_path, "hostile.png")
    assert_quiet(browser)
