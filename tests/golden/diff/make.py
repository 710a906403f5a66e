"""Write the input pairs of ctidiff's golden tests from messages.jsonl (fifty real
CTI messages, one session's worth, taken from captures of XiVO servers and clients).

    python tests/golden/diff/make.py

Each pair is A (the session as recorded) and B (the same session after one kind
of change); the expected outputs (*.out) come from ctidiff itself and were read
by a person before being kept.
"""
from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VOLATILE = ("timenow", "commandid", "replyid", "sessionid")


def base() -> list[dict]:
    """The fifty records: {"from": side, "msg": message} or {"from": side, "raw": text}."""
    return [json.loads(line) for line in (HERE / "messages.jsonl").read_text().splitlines()]


def write(name: str, records: list[dict], conn: int = 1, start: float = 1764262479.0,
          more: list[tuple[int, list[dict]]] = ()) -> None:
    """A tagged stream as ctirelay writes it; `more` adds other sessions, interleaved."""
    sessions = [(conn, records), *more]
    lines = [{"ts": start, "event": "start", "stream": 1, "producer": "ctirelay 0.1.0",
              "listen": ["127.0.0.1:50030"], "server": "xivo:5003"}]
    for number, _ in sessions:
        lines.append({"ts": start, "conn": number, "event": "open",
                      "client": f"127.0.0.1:{51000 + number}", "server": "xivo:5003"})
    longest = max(len(recs) for _, recs in sessions)
    for n in range(longest):
        for number, recs in sessions:
            if n < len(recs):
                record = recs[n]
                body = {"ts": round(start + 0.01 * (n + 1) + 0.001 * number, 6), "conn": number,
                        "from": record["from"]}
                content = {k: v for k, v in record.items() if k in ("msg", "raw")}
                body["size"] = len(json.dumps(next(iter(content.values())))) + 1
                body.update(content)
                lines.append(body)
    for number, recs in sessions:
        lines.append({"ts": start + 1, "conn": number, "event": "close", "by": "client",
                      "bytes": {"client": 1000, "server": 5000}, "reads": {"client": 20, "server": 30},
                      "duration": 1.0})
    with open(HERE / name, "w") as out:
        for line in lines:
            out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")


def shake(records: list[dict], seed: int) -> list[dict]:
    """The same session as recorded again: every volatile field has another value."""
    rng = random.Random(seed)
    records = copy.deepcopy(records)
    for record in records:
        message = record.get("msg")
        if isinstance(message, dict):
            for key in VOLATILE:
                if key == "timenow" and key in message:
                    message[key] = round(message[key] + rng.uniform(1, 1e6), 6)
                elif key == "sessionid" and key in message:
                    message[key] = "".join(rng.choice("abcdefXYZ0123") for _ in range(10))
                elif key in message:
                    message[key] = rng.randrange(1, 2 ** 31)
    return records


def find(records: list[dict], side: str = "server", **fields) -> int:
    for n, record in enumerate(records):
        message = record.get("msg")
        if record["from"] == side and isinstance(message, dict) and \
                all(message.get(k) == v for k, v in fields.items()):
            return n
    raise LookupError(fields)


def main() -> None:
    a = base()
    write("a.jsonl", a)
    write("volatile.jsonl", shake(a, 1))

    inserted = shake(a, 2)
    extra = {"from": "server", "msg": {"class": "getlist", "function": "updatestatus", "listname": "phones",
                                       "status": {"hintstatus": "0"}, "tid": "1", "tipbxid": "xivo",
                                       "timenow": 1364994093.38}}
    inserted.insert(find(inserted, listname="users", function="updatestatus"), extra)
    write("inserted.jsonl", inserted)

    deleted = shake(a, 3)
    del deleted[find(deleted, "client", **{"class": "availstate"})]
    write("deleted.jsonl", deleted)

    nested = shake(a, 4)
    entries = nested[find(nested, **{"class": "queueentryupdate"})]["msg"]["state"]["entries"]
    entries[0]["position"], entries[1]["position"] = 2, 1
    entries.reverse()  # same items, listed in the other order: matched by uniqueid
    nested[find(nested, **{"class": "user_status_update"})]["msg"]["data"]["status"] = 4
    config = nested[find(nested, function="updateconfig", tid="2")]["msg"]["config"]
    config["destunc"] = "1003"
    config["enablebusy"] = False
    write("nested.jsonl", nested)

    reordered = shake(a, 5)
    n = find(reordered, **{"class": "agent_status_update"})
    reordered[n], reordered[n + 1] = reordered[n + 1], reordered[n]
    write("reordered.jsonl", reordered)

    # A getlist answer of 3,000 users; B's has one id changed in the middle.
    big = [str(n) for n in range(1, 3001)]
    listid = {"class": "getlist", "function": "listid", "listname": "users", "list": big,
              "tipbxid": "xivo", "timenow": 1362735061.17}
    large_a = copy.deepcopy(a)
    large_a[find(large_a, function="listid", listname="users")]["msg"] = listid
    write("large-a.jsonl", large_a)
    large_b = shake(large_a, 6)
    large_b[find(large_b, function="listid", listname="users")]["msg"]["list"][1499] = "15000"
    write("large-b.jsonl", large_b)

    raw = shake(a, 7)
    raw[next(n for n, r in enumerate(raw) if "raw" in r)]["raw"] = "XiVO CTI server: \x1b[2Jcleared\u202e"
    write("raw.jsonl", raw)

    # Two sessions in one file: the second is the first with one changed field.
    second = shake(a, 8)
    second[find(second, **{"class": "dial_success"})]["msg"]["exten"] = "1003"
    write("two-sessions.jsonl", a, more=[(2, second)])

    # The server's side of a.jsonl and nested.jsonl as the classic ctisave saves it.
    for stream, name in (("a.jsonl", "classic-a-server"), ("nested.jsonl", "classic-b-server")):
        with open(HERE / stream, "rb") as records:
            subprocess.run([sys.executable, "-m", "ctipipe", "ctisplit", "/dev/null", str(HERE / name)],
                           stdin=records, check=True)


if __name__ == "__main__":
    main()
