"""ctireport's cost: a session of 100,000 messages written as a page (seconds,
peak memory, the page's size against the stream's), then, in headless Chromium
when it is installed, how long the page takes to show its first rows, to
scroll to its end, and to draw the timeline of 1,000 sessions.

Targets: the report in under 5 s and 300 MB, the page at most 1.5x the stream
plus 1 MB; first rows within 3 s, the end within 1 s, 1,000 sessions within 2 s.

    .venv/bin/python tests/bench/report_bench.py [--messages 100000] [--sessions 1000]
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import messages  # noqa: E402  (tests/bench/messages.py)

T0 = 1764262479.0
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def session_stream(path: Path, count: int) -> None:
    """One session of `count` messages: realistic server traffic, a client
    request every fifth message, answered two messages later."""
    rng = random.Random(count)
    server = messages.messages(count)
    with open(path, "wb") as out:
        out.write(orjson.dumps({"ts": T0, "event": "start", "stream": 1, "producer": "bench"}) + b"\n")
        out.write(orjson.dumps({"ts": T0, "conn": 1, "event": "open", "client": "10.0.0.1:4000",
                                "server": "xivo:5003"}) + b"\n")
        t = T0
        for n in range(count):
            t += rng.expovariate(1000.0)
            if n % 5 == 0:
                side, text = "client", orjson.dumps({"class": "ipbxcommand", "command": "queuepause",
                                                     "commandid": n, "member": str(n % 97)})
            elif n % 5 == 2:
                side, text = "server", orjson.dumps({"class": "ipbxcommand", "replyid": n - 2,
                                                     "ipbxreply": 1, "timenow": t})
            else:
                side, text = "server", server[n][:-1]
            out.write(b'{"ts":%.6f,"conn":1,"from":"%s","size":%d,"msg":%s}\n'
                      % (t, side.encode(), len(text) + 1, text))
        out.write(orjson.dumps({"ts": t + 0.1, "conn": 1, "event": "close", "by": "client",
                                "bytes": {"client": 0, "server": 0}, "reads": {"client": 0, "server": 0},
                                "duration": t + 0.1 - T0}) + b"\n")


def sessions_stream(path: Path, count: int) -> None:
    """`count` overlapping sessions of 10 messages each, as a load test makes."""
    records = []
    for conn in range(1, count + 1):
        t = T0 + conn * 0.002
        records.append({"ts": t, "conn": conn, "event": "open", "client": f"10.0.{conn >> 8}.{conn & 255}:4000",
                        "server": "xivo:5003"})
        for n in range(5):
            records.append({"ts": t + 0.01 * n, "conn": conn, "from": "client", "size": 60,
                            "msg": {"class": "getlist", "function": "listid", "commandid": n}})
            records.append({"ts": t + 0.01 * n + 0.003, "conn": conn, "from": "server", "size": 90,
                            "msg": {"class": "getlist", "function": "listid", "replyid": n, "list": [1, 2]}})
        records.append({"ts": t + 0.2, "conn": conn, "event": "close", "by": "client",
                        "bytes": {"client": 300, "server": 450}, "reads": {"client": 5, "server": 5},
                        "duration": 0.2})
    records.sort(key=lambda r: r["ts"])
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def write_report(source: Path, out: Path) -> tuple[float, float]:
    """Seconds and peak resident MB of `ctireport SOURCE -o OUT`."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-P", "-m", "ctipipe", "ctireport", str(source), "-o", str(out)])
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak memory
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("ctireport failed")
    return elapsed, usage.ru_maxrss / 1024


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(120)
    driver.set_script_timeout(60)
    return driver


def loaded_in(driver, page: Path) -> float:
    """Seconds from navigation to the end of the page's load event: the page's
    script runs before it, so its first rows (or bars) are drawn by then."""
    driver.get(page.as_uri())
    assert driver.execute_script("return document.body.dataset.ready") == "true"
    return driver.execute_script(
        "return performance.getEntriesByType('navigation')[0].loadEventEnd") / 1000


def scrolled_in(driver) -> tuple[float, bool]:
    """Seconds to scroll the ladder to its end and draw it, and whether the last row shows."""
    return tuple(driver.execute_async_script("""
        const done = arguments[arguments.length - 1], box = document.getElementById('ladder');
        const start = performance.now();
        box.scrollTop = box.scrollHeight;
        requestAnimationFrame(() => requestAnimationFrame(() => {
            const rows = [...document.querySelectorAll('#ladder .row')];
            done([(performance.now() - start) / 1000,
                  rows.length < 100 && +rows[rows.length - 1].dataset.row > 100000 - 10]);
        }));"""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--sessions", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        source, page = folder / "session.jsonl", folder / "session.html"
        session_stream(source, args.messages)
        seconds, peak = write_report(source, page)
        stream_mb, page_mb = source.stat().st_size / 1e6, page.stat().st_size / 1e6
        print(f"ctireport, one session of {args.messages:,} messages: {seconds:.2f} s, peak {peak:.0f} MB; "
              f"stream {stream_mb:.1f} MB, page {page_mb:.1f} MB ({page_mb / stream_mb:.2f}x; "
              f"bound 1.5x + 1 MB = {1.5 * stream_mb + 1:.1f} MB)")
        many_source, many_page = folder / "sessions.jsonl", folder / "sessions.html"
        sessions_stream(many_source, args.sessions)
        write_report(many_source, many_page)
        if not (CHROMIUM and os.path.exists(DRIVER)):
            print("Chromium part skipped: apt-get install chromium chromium-driver")
            return
        driver = browser()
        try:
            driver.get("about:blank")  # the browser's own start is not the page's
            first = loaded_in(driver, page)
            scroll, reached = scrolled_in(driver)
            again = loaded_in(driver, page)
            timeline = loaded_in(driver, many_page)
            bars = driver.execute_script("return document.querySelectorAll('#timeline .bar').length")
        finally:
            driver.quit()
        print(f"Chromium: first rows of {args.messages:,} messages after {first:.2f} s "
              f"(opened again: {again:.2f} s); scrolled to the end in {scroll:.3f} s (last row "
              f"shown: {reached}); {bars:,} sessions' timeline after {timeline:.2f} s")


if __name__ == "__main__":
    main()
