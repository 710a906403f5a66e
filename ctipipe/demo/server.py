"""The demo CTI server: answers as a XiVO does, sends status updates, offers STARTTLS.

Messages follow the public CTI protocol documentation: the login_id /
login_pass / login_capas handshake, getlist listid and updateconfig answers,
ipbxcommand replies whose replyid is the request's commandid, and unsolicited
status updates. `answer` and `status_update` are pure; `serve` is the I/O.
"""
from __future__ import annotations

import errno
import hashlib
import itertools
import random
import ssl
import time

import orjson
import trio

from ctipipe.core import cli
from ctipipe.demo.lines import Lines
from ctipipe.relay import certs as tls

IPBX = "xivo"
PASSWORD = "demo"  # every demo user's password

USERS = {
    "1": ("Alice", "Bouzat", "1001"), "2": ("Björn", "Lindström", "1002"),
    "3": ("Zoé", "Müller", "1003"), "4": ("José", "Núñez", "1004"),
    "5": ("Ingrid", "Åkesson", "1005"), "6": ("Hélène", "Gauthier", "1006"),
}
AGENTS = {"1": "2001", "2": "2002", "3": "2003"}
QUEUES = {"1": ("blue", "3001"), "2": ("yellow", "3002"), "3": ("red", "3003")}
AVAILABILITY = ("available", "away", "on_call_acd", "on_call_non_acd_incoming_external", "logged_out")

# Unsolicited status updates while a client is logged in, as a live switch sends them.
STATUS_INTERVAL = 0.25

# The real server drops a client whose TLS handshake has not begun within this long.
HANDSHAKE_TIMEOUT = 0.5


def _now() -> float:
    return round(time.time(), 2)


def user_config(tid: str) -> dict:
    first, last, number = USERS[tid]
    return {"enablednd": False, "destrna": "", "enablerna": False, "enableunc": False,
            "destunc": "", "destbusy": "", "enablebusy": False, "enablexfer": True,
            "firstname": first, "lastname": last, "fullname": f"{first} {last}",
            "voicemailid": None, "incallfilter": False, "enablevoicemail": False,
            "profileclient": None, "agentid": int(tid) if tid in AGENTS else None,
            "enableclient": True, "linelist": [tid], "mobilephonenumber": "",
            "context": "default", "number": number}


def answer(request: dict, session: dict) -> list[dict]:
    """What the demo server says to one client message."""
    kind = request.get("class")
    commandid = request.get("commandid")
    now = _now()
    # Protocol 1.x (xivoversion) hashes the password with the session id; 2.x
    # (wazoversion) sends it in clear inside TLS, and its login replies carry
    # no replyid.
    two = session.get("protocol") == 2
    login_reply = {} if two else {"replyid": commandid}
    if kind == "login_id":
        # ten different characters, as the real server draws them (random.sample)
        session["sessionid"] = "".join(random.sample("abcdefghijkmnpqrstuvwxyzABCDEFGH23456789",
                                                     10))
        session["user"] = request.get("userlogin")
        if "wazoversion" in request:
            session["protocol"] = 2
            return [{"class": "login_id", "sessionid": session["sessionid"], "timenow": now,
                     "wazoversion": "18.03"}]
        return [{"class": "login_id", "sessionid": session["sessionid"], "timenow": now,
                 "xivoversion": "1.2"}]
    if kind == "login_pass":
        if two:
            ok = request.get("password") == PASSWORD
        else:
            ok = request.get("hashedpassword") == hashlib.sha1(
                f"{session.get('sessionid')}:{PASSWORD}".encode()).hexdigest()
        if not ok:
            return [{"class": "login_pass", "error_string": "login_password", **login_reply,
                     "timenow": now}]
        return [{"capalist": [2], "class": "login_pass", **login_reply, "timenow": now}]
    if kind == "login_capas":
        session["logged_in"] = True
        return [{"class": "login_capas", "userid": "1", "ipbxid": IPBX, "appliname": "Client",
                 "capas": {"regcommands": {}, "preferences": False,
                           "userstatus": {"available": {"color": "#08FD20", "longname": "Disponible"},
                                          "away": {"color": "#FDE50A", "longname": "Absent"}},
                           "phonestatus": {"0": {"color": "#0DFF25", "longname": "Disponible"}},
                           "services": ["enablednd", "fwdunc", "fwdbusy", "fwdrna"],
                           "ipbxcommands": ["dial", "hangup", "transfer"]},
                 "presence": request.get("state", "available"), **login_reply,
                 "timenow": now}]
    if kind == "getlist":
        listname = request.get("listname")
        table = {"users": USERS, "phones": USERS, "agents": AGENTS, "queues": QUEUES}.get(listname, {})
        if request.get("function") == "listid":
            return [{"class": "getlist", "function": "listid", "listname": listname,
                     "list": list(table), "tipbxid": IPBX, "timenow": now, "replyid": commandid}]
        if request.get("function") == "updateconfig":
            tid = str(request.get("tid"))
            if listname == "users" and tid in USERS:
                config = user_config(tid)
            elif listname == "phones" and tid in USERS:
                config = {"allowtransfer": None, "context": "default", "identity": f"SIP/demo{tid}",
                          "iduserfeatures": int(tid), "initialized": None,
                          "number": USERS[tid][2], "protocol": "sip"}
            elif listname == "queues" and tid in QUEUES:
                config = {"displayname": QUEUES[tid][0], "name": QUEUES[tid][0],
                          "context": "default", "number": QUEUES[tid][1]}
            else:
                config = {}
            return [{"class": "getlist", "function": "updateconfig", "listname": listname,
                     "tid": tid, "tipbxid": IPBX, "timenow": now, "config": config,
                     "replyid": commandid}]
    if kind == "ipbxcommand":
        command = request.get("command")
        replies = [{"class": "ipbxcommand", "command": command, "ipbxreply": 1,
                    "replyid": commandid, "timenow": now}]
        if command == "dial":
            exten = str(request.get("destination", "")).rpartition("/")[2]
            replies.append({"class": "dial_success", "exten": exten, "timenow": now})
        return replies
    if kind == "keepalive":
        return [{"class": "keepalive", "replyid": commandid, "timenow": now}]
    if kind == "logout":
        return []
    return [{"class": kind, "error_string": "unknown_class", "replyid": commandid, "timenow": now}]


def status_update(counter: int) -> dict:
    """An unsolicited status message, cycling through agents and phones."""
    now = _now()
    if counter % 2:
        tid = str(counter % len(AGENTS) + 1)
        return {"class": "getlist", "function": "updatestatus", "listname": "agents",
                "tipbxid": IPBX, "tid": int(tid), "timenow": now,
                "status": {"availability": AVAILABILITY[counter % len(AVAILABILITY)],
                           "availability_since": now, "queues": ["1", "2"], "groups": [],
                           "on_call": counter % 3 == 0, "phonenumber": AGENTS[tid],
                           "channel": None}}
    tid = str(counter % len(USERS) + 1)
    return {"class": "getlist", "function": "updatestatus", "listname": "phones",
            "tipbxid": IPBX, "tid": tid, "timenow": now,
            "status": {"hintstatus": str(counter % 4), "channels": [], "queues": [], "groups": []}}


DEMO_CERT_DIR = "demo-server"  # beside the relay's certificate, in the data directory


def _demo_certificate() -> ssl.SSLContext:
    """The demo server's TLS context: its own certificate, made the way the relay makes its."""
    cert, key, _ = demo_files()
    return tls.client_leg_context(cert, key)


def demo_files():
    """The demo server's own certificate: not the relay's file names nor its subject."""
    return tls.relay_certificate(tls.data_dir() / DEMO_CERT_DIR, name="demo-server",
                                 subject="ctipipe demo server")


async def serve(listen_addr: str, port: int, *, starttls: bool = True,
                task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve demo sessions on listen_addr:port, offering STARTTLS as XiVO 15.20-19.03 do."""
    context = _demo_certificate() if starttls else None
    try:
        listeners = await trio.open_tcp_listeners(port, host=listen_addr)
    except OSError as error:
        hint = (" (another server running? choose another --port)"
                if error.errno == errno.EADDRINUSE else "")
        raise cli.CommandError(f"cannot listen on {listen_addr}:{port}: "
                               f"{error.strerror or error}{hint}") from None
    bound = listeners[0].socket.getsockname()[1]
    cli.report("ctidemo server", f"listening on {listen_addr}:{bound}"
               + (" (offering STARTTLS)" if starttls else " (plain, no STARTTLS)"))
    task_status.started(bound)
    await trio.serve_listeners(lambda client: _serve_client(client, context), listeners)


async def _serve_client(client: trio.SocketStream, context: ssl.SSLContext | None) -> None:
    session: dict = {}
    lines = Lines(client)
    send_lock = trio.Lock()

    async def send(message: dict) -> None:
        async with send_lock:
            await lines.stream.send_all(orjson.dumps(message) + b"\n")

    async def updates() -> None:
        for counter in itertools.count():
            await trio.sleep(STATUS_INTERVAL)
            if session.get("logged_in"):
                await send(status_update(counter))

    try:
        async with client, trio.open_nursery() as nursery:
            if context is not None:  # the unsolicited offer, right after accept
                await send({"class": "starttls", "timenow": _now()})
            nursery.start_soon(updates)
            while (line := await lines.next()) is not None:
                try:
                    request = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(request, dict):
                    continue
                if request.get("class") == "starttls":
                    # Only the first exchange counts; later ones are ignored, as
                    # the real server does (the XiVO client sends a second one).
                    if context is not None and not session.get("starttls_done"):
                        session["starttls_done"] = True
                        status = request.get("status")
                        await send({"class": "starttls", "timenow": _now(), "starttls": status})
                        if status:
                            if lines.pending():
                                return  # plaintext after the request: not a TLS client
                            upgraded = trio.SSLStream(client, context, server_side=True,
                                                      https_compatible=True)
                            with trio.fail_after(HANDSHAKE_TIMEOUT):
                                await upgraded.do_handshake()
                            lines.stream = upgraded
                    continue
                for reply in answer(request, session):
                    await send(reply)
            nursery.cancel_scope.cancel()
    except Exception as error:  # noqa: BLE001 - one client's end never ends the server
        # The nursery wraps what a task raised in a group: look at what is inside.
        gone = (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError)
        unexpected = [leaf for leaf in cli.leaves(error) if not isinstance(leaf, gone)]
        if unexpected:  # not merely a client that went away or never began its handshake
            cli.report("ctidemo server", f"a session ended on an error: {unexpected[0]}")
