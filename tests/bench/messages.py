"""Realistic CTI server messages for load: the shapes XiVO sends to a busy
switchboard or supervisor, 109 to about 2,500 bytes, about 272 bytes on average."""
from __future__ import annotations

import random

import orjson

NAMES = ["Alice Bouzat", "Björn Lindström", "Zoé Müller", "José Núñez", "Ingrid Åkesson",
         "Hélène Gauthier", "Li Wei", "Mark Spencer"]


def _status(rng: random.Random, n: int) -> dict:
    return {"class": "getlist", "function": "updatestatus", "listname": "agents", "tipbxid": "xivo",
            "tid": rng.randrange(1, 400), "timenow": 1764262479.12 + n / 1000,
            "status": {"availability": rng.choice(["available", "on_call_acd", "away", "logged_out"]),
                       "availability_since": 1764262000.5 + n, "queues": [str(rng.randrange(1, 20))],
                       "groups": [], "on_call": rng.random() < 0.3,
                       "phonenumber": str(rng.randrange(1000, 9999)), "channel": None}}


def _phone(rng: random.Random, n: int) -> dict:
    return {"class": "getlist", "function": "updatestatus", "listname": "phones", "tipbxid": "xivo",
            "tid": str(rng.randrange(1, 400)), "timenow": 1764262479.12 + n / 1000,
            "status": {"hintstatus": str(rng.randrange(0, 9)), "channels": [], "queues": [], "groups": []}}


def _reply(rng: random.Random, n: int) -> dict:
    return {"class": "ipbxcommand", "command": "queuepause", "ipbxreply": 1,
            "replyid": rng.randrange(10**8, 10**9), "timenow": 1764262479.12 + n / 1000}


def _config(rng: random.Random, n: int) -> dict:
    name = rng.choice(NAMES)
    first, _, last = name.partition(" ")
    return {"class": "getlist", "function": "updateconfig", "listname": "users", "tipbxid": "xivo",
            "tid": str(rng.randrange(1, 400)), "timenow": 1764262479.12 + n / 1000,
            "config": {"enablednd": False, "destrna": "", "enablerna": False, "enableunc": False,
                       "destunc": "", "destbusy": "", "enablebusy": False, "enablexfer": True,
                       "firstname": first, "lastname": last, "fullname": name, "voicemailid": None,
                       "incallfilter": False, "enablevoicemail": False, "profileclient": None,
                       "agentid": rng.randrange(1, 99), "enableclient": True, "linelist": ["7"],
                       "mobilephonenumber": ""}}


def _queue_members(rng: random.Random, n: int) -> dict:
    members = [f"Agent/{rng.randrange(1000, 9999)},{rng.choice(['blue', 'yellow', 'red', 'sales'])}"
               for _ in range(rng.randrange(20, 130))]
    return {"function": "listid", "listname": "queuemembers", "tipbxid": "xivo", "list": members,
            "timenow": 1764262479.12 + n / 1000, "class": "getlist"}


# (maker, weight): mostly status updates, as a live switch sends them
_SHAPES = [(_status, 50), (_phone, 27), (_reply, 14), (_config, 7), (_queue_members, 2)]


def messages(count: int, seed: int = 5003) -> list[bytes]:
    """`count` newline-terminated wire messages (deterministic for a seed)."""
    rng = random.Random(seed)
    makers = [maker for maker, weight in _SHAPES for _ in range(weight)]
    return [orjson.dumps(rng.choice(makers)(rng, n)) + b"\n" for n in range(count)]


def stream_file(path: str, count: int) -> None:
    """A saved tagged stream of `count` server messages, as ctirelay writes it."""
    from ctipipe.core import stream
    with open(path, "wb") as out:
        out.write(stream.event_record(1764262479.0, 1, "open", client="127.0.0.1:50000",
                                      server="xivo:5003"))
        batch = []
        total = 0
        for n, message in enumerate(messages(count)):
            head = stream.data_head(1764262479.0 + n / 1e5, 1, "server" if n % 5 else "client")
            batch.append(stream.message_record(head, len(message), message[:-1]))
            total += len(message)
            if len(batch) == 10000:
                out.write(b"".join(batch))
                batch.clear()
        out.write(b"".join(batch))
        out.write(stream.event_record(1764262480.0, 1, "close", by="client",
                                      bytes={"client": 0, "server": total},
                                      reads={"client": 0, "server": count // 200},
                                      duration=1.0))


if __name__ == "__main__":
    sample = messages(100000)
    sizes = [len(m) for m in sample]
    print(f"{len(sample)} messages, {min(sizes)}-{max(sizes)} bytes, mean {sum(sizes) / len(sizes):.0f}")
