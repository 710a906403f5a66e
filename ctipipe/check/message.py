"""The rules of one message (rules.py), applied to a client or server message
for a protocol version: pure, no state. checker.py adds what needs a
session's history."""
from __future__ import annotations

import math
import re
import uuid
from typing import NamedTuple

from ctipipe.check import rules as R
from ctipipe.core import protocol, stream
from ctipipe.core.terminal import safe_json

_INT_TEXT = re.compile(r"\s*[+-]?\d+\s*\Z")
_SESSIONID = re.compile(r"[A-Za-z0-9]{10}\Z")
_HEX40 = re.compile(r"[0-9a-f]{40}\Z")
_RANK = {version: index for index, version in enumerate(protocol.VERSIONS)}


class Finding(NamedTuple):
    rule: str
    text: str
    server: str  # what the server does about it (empty: nothing)
    value: object = None  # the value at fault, when one field is (tests excuse templates)


def finding(rule: str, text: str, server: str | None = None, value: object = None) -> Finding:
    return Finding(rule, text, R.BY_ID[rule].server if server is None else server, value)


# --- one message -------------------------------------------------------------

def int_like(value: object) -> bool:
    """Would Python 2's int() accept it (what the server calls)?"""
    if type(value) in (int, bool):
        return True
    if type(value) is float:
        return math.isfinite(value)
    return type(value) is str and _INT_TEXT.match(value) is not None


def _is_uuid(value: object) -> bool:
    if type(value) is not str:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def at_least(version: str, first: str) -> bool:
    return _RANK[version] >= _RANK[first]


def _field(name: str, key: str, kind: str, value: object, version: str) -> Finding | None:
    """The finding for field `key` of kind `kind` (rules.py), if its value breaks it."""
    if kind == "any":
        return None
    if kind == "int":
        if not int_like(value):
            return finding("M2", f"{key} {show(value)} is not a number int() reads", value=value)
    elif kind == "str-alnum":
        if type(value) is not str or not value.isalnum():
            return finding("M2", f"{key} {show(value)} must be a string of letters and "
                            f"digits", value=value)
    elif kind == "pairs":
        if type(value) is not list or any(type(pair) is not list or len(pair) != 2
                                          for pair in value):
            return finding("M2", f"{key} must be a list of [xivo_uuid, id] pairs, each "
                            f"exactly 2 items", value=_template_of(value))
    elif kind == "meetme":
        if (type(value) is not list or len(value) != 2
                or not all(type(item) is str and item.isalnum() for item in value)):
            return finding("M2", f"{key} must be [room_number, user_position], two strings "
                            f"of letters and digits", value=_template_of(value))
    elif kind == "bool":
        if type(value) is not bool and value not in (0, 1):
            return finding("M5", f"{name} value {show(value)} is not a JSON boolean: the "
                            f"server matches value == true/false and drops anything else",
                            value=value)
    elif kind == "fwd":
        if type(value) in (str, list):
            return finding("M5", f"{name} value must be an object of enableX/destX keys: "
                            f"the server finds no enableX in it and does nothing", value=value)
        if type(value) is not dict:
            return finding("M2", f"{name} value must be an object of enableX/destX keys",
                            value=value)
        for what in ("unc", "rna", "busy"):
            if f"enable{what}" in value and f"dest{what}" not in value:
                return finding("M1", f"{name} enable{what} needs dest{what} beside it")
    elif kind == "chat-to":
        if at_least(version, "2.1"):
            if type(value) is not list or len(value) != 2 or not all(map(_is_uuid, value)):
                return finding("M2", f"protocol {version} expects to = [xivo_uuid, user_uuid], "
                                f"two UUID strings", value=_template_of(value))
        elif version == "2.0":
            if (type(value) is not list or len(value) != 2
                    or not (int_like(value[1]) and int(float(value[1])) > 0)):
                return finding("M2", "protocol 2.0 expects to = [xivo_uuid, user_id], a "
                                "positive user id", value=_template_of(value))
    return None


def _template_of(value: object) -> object:
    """The first documentation template ("<name>") inside a value, else the value."""
    if type(value) is list:
        for item in value:
            found = _template_of(item)
            if is_template(found):
                return found
    return value


def is_template(value: object) -> bool:
    """A documentation template value such as "<user_uuid>" (the corpus has them)."""
    return type(value) is str and value.startswith("<") and value.endswith(">")


def show(value: object) -> str:
    """A wire value as it was on the wire: compact JSON, what could drive a
    terminal escaped, cut after 40 characters."""
    text = safe_json(stream.dumps(value)).decode("utf-8", "replace")
    return text if len(text) <= 40 else text[:37] + "..."


def class_label(name: object) -> str:
    """A message's class in a finding: as it is when a string, else as JSON."""
    return name if type(name) is str else show(name)


def _required(name: str, spec: dict, message: dict, version: str, out: list) -> None:
    hints = spec.get("hint", {})
    for key, kind in spec.get("required", {}).items():
        if key not in message:
            wrong = next((spelt for spelt, right in hints.items() if right == key
                          and spelt in message), None)
            if wrong:
                out.append(finding("M1", f'{name} needs "{key}", not "{wrong}" (the '
                                    f"documentation's spelling)"))
            else:
                out.append(finding("M1", f'{name} needs "{key}"'))
            continue
        found = _field(name, key, kind, message[key], version)
        if found:
            out.append(found)


def check_client(message: object, version: str) -> list[Finding]:
    """The findings of one client message on its own, for a protocol version."""
    if type(message) is not dict:
        return [finding("F1", "a JSON value that is not an object")]
    name = message.get("class")
    if type(name) is not str:
        return [finding("F1", "no class" if name is None else f"class {show(name)} is not "
                         f"a string")]
    out: list[Finding] = []
    spec = R.CLIENT_CLASSES.get(name)
    if spec is None:
        removed = R.REMOVED_CLASSES.get(name)
        if removed and not at_least(version, removed[0]):
            return out
        why = f" ({removed[1]})" if removed else ""
        return [finding("M3", f"protocol {version} has no class {name}{why}", value=name)]
    if name == "starttls":
        if type(message.get("status")) is not bool:
            out.append(finding("S2", f"status {show(message.get('status'))} is not true or "
                                f"false: the server echoes it and does not upgrade"
                                if "status" in message else "no status: the server echoes "
                                "starttls null and does not upgrade"))
        return out
    if name == "login_id":
        _required(name, spec, message, version, out)
        for found in out:
            out[out.index(found)] = found._replace(rule="L2")
        _login_id_version(message, version, out)
        return out
    if name == "login_pass":
        _login_pass(message, version, out)
        return out
    if name == "login_capas":
        _login_capas(message, version, out)
        return out
    dispatch = spec.get("dispatch")
    if dispatch:
        which = message.get(dispatch)
        if dispatch not in message:
            if spec.get("dispatch_required"):
                return [finding("M1", f'{name} needs "{dispatch}"')]
            return [finding("M4", f'{name} without "{dispatch}" [inferred]')]
        variant = spec["variants"].get(which) if type(which) is str else None
        if variant is None:
            removed = (R.REMOVED_COMMANDS.get(which) if name == "ipbxcommand" and type(which) is str
                       else None)
            if removed and not at_least(version, removed[0]):
                return out
            why = f" ({removed[1]})" if removed else ""
            return [finding("M4", f"{name} {dispatch} {show(which)} is unknown to protocol "
                             f"{version}{why}", value=which)]
        label = f"{name} {which}"
        _required(label, variant, message, version, out)
        if name == "getlist":
            _getlist(which, variant, message, out)
        elif name == "ipbxcommand" and which == "meetme" and "function" in message:
            if message["function"] not in ("MeetmeMute", "MeetmeUnmute"):
                out.append(finding("M4", f"meetme function {show(message['function'])} is "
                                    f"not MeetmeMute or MeetmeUnmute",
                                    value=message["function"]))
        return out
    _required(name, spec, message, version, out)
    return out


def _getlist(function: str, variant: dict, message: dict, out: list) -> None:
    listname = message.get("listname")
    if "listname" in message and (type(listname) is not str or listname not in R.LISTNAMES):
        if function == "updateconfig":
            out.append(finding("M2", f"getlist updateconfig of unknown list {show(listname)}: "
                                f"the server's lookup fails [inferred]", value=listname))
        else:
            out.append(finding("M5", f"getlist {function} of unknown list {show(listname)}: "
                                + ("no answer comes" if function == "listid"
                                   else "the answer is empty"), value=listname))
    if variant.get("tid") and "tid" not in message:
        out.append(finding("M5", f"getlist {function} without tid: the answer is empty"))


def _login_id_version(message: dict, version: str, out: list) -> None:
    key = R.VERSION_KEY[version]
    if version == "2.3":
        if "wazoversion" in message:
            return
        if "xivoversion" in message:
            out.append(finding("L2", "protocol 2.3 reads wazoversion; xivoversion is accepted "
                                "only since Wazo 17.17", "wazo-17.16 closes the connection on "
                                "this"))
            return
    elif key in message:
        return
    elif "wazoversion" in message:
        out.append(finding("L2", f"protocol {version} reads xivoversion, not wazoversion",
                            R.REFUSES))
        return
    out.append(finding("L2", f"no {key}: the server answers "
                        f"{key.replace('version', 'version_client')}:None;{version}", R.REFUSES))


def _login_pass(message: dict, version: str, out: list) -> None:
    if version == "1.2":
        if "hashedpassword" not in message:
            text = ('protocol 1.2 expects "hashedpassword" (SHA1 of "sessionid:password"), not '
                    '"password"' if "password" in message else 'login_pass needs "hashedpassword"')
            out.append(finding("L3", text, "the server refuses it with missing:hashedpassword "
                                "and closes the connection"))
        elif type(message["hashedpassword"]) is not str or not _HEX40.match(
                message["hashedpassword"]):
            out.append(finding("L3", "hashedpassword is not 40 lowercase hex digits (SHA1 of "
                                "\"sessionid:password\")", R.REFUSES,
                                value=message["hashedpassword"]))
        return
    if "password" not in message:
        text = (f'protocol {version} expects "password", not "hashedpassword"'
                if "hashedpassword" in message else 'login_pass needs "password"')
        out.append(finding("L3", text))


def _login_capas(message: dict, version: str, out: list) -> None:
    if "capaid" not in message:
        out.append(finding("L4", 'login_capas needs "capaid"'))
    elif not int_like(message["capaid"]):
        out.append(finding("L4", f"capaid {show(message['capaid'])} is not a number int() "
                            f"reads", value=message["capaid"]))
    if "state" not in message:
        out.append(finding("L4", 'login_capas needs "state"'))
    legacy = [key for key in ("lastconnwins", "loginkind") if key in message]
    if version == "1.2":
        missing = [key for key in ("lastconnwins", "loginkind") if key not in message]
        if missing:
            out.append(finding("L4", f"protocol 1.2 requires {', '.join(missing)}",
                                f"the server refuses it with missing:{','.join(missing)} and "
                                f"closes the connection"))
    elif legacy:
        out.append(finding("L4", f"{' and '.join(legacy)}: obsolete since protocol 2.0",
                            "the server ignores them"))


def check_server(message: object, version: str) -> list[Finding]:
    """The findings of one server message on its own, for a protocol version."""
    if type(message) is not dict:
        return [finding("F1", "a JSON value that is not an object", R.NOTHING)]
    out: list[Finding] = []
    timenow = message.get("timenow")
    if type(timenow) not in (int, float):
        out.append(finding("F2", "no timenow" if timenow is None
                            else f"timenow {show(timenow)} is not a number"))
    name = message.get("class")
    if (version != "1.2" and "replyid" in message
            and (type(name) is not str or name not in protocol.REPLYID_CLASSES)):
        out.append(finding("R3", f"a {class_label(name)} reply with replyid: the real server sends none, "
                            f"so a client waiting for it would wait forever"))
    error = message.get("error_string")
    if error is not None:
        out.append(explain_error(error, name, version))
    if name == "login_id" and error is None:
        sessionid = message.get("sessionid")
        if (type(sessionid) is not str or not _SESSIONID.match(sessionid)
                or len(set(sessionid)) != 10):
            out.append(finding("L5", f"sessionid {show(sessionid)} is not 10 distinct "
                                f"letters and digits", value=sessionid))
        key = R.VERSION_KEY[version]
        if message.get(key) != version:
            said = next((f"{k} {show(message[k])}" for k in ("wazoversion", "xivoversion")
                         if k in message), "no version")
            out.append(finding("L5", f"protocol {version} answers {key} \"{version}\", not "
                                f"{said}", value=message.get(key)))
    return out


def explain_error(error: object, name: object, version: str) -> Finding:
    """E1: what an error_string from the server means, in words."""
    text = str(error)
    head, _, rest = text.partition(":")
    known = R.ERRORS.get(text) or R.ERRORS.get(head)
    if known is None:
        return finding("E1", f"{class_label(name)} error {show(error)}: not an error the real server "
                        f"sends", value=error)
    versions, meaning = known
    args = rest.split(";") if rest else []
    meaning = meaning.format(*(args + ["?", "?"]))
    note = "" if version in versions else f" (protocol {', '.join(versions)} only)"
    return finding("E1", f"{class_label(name)} error {show(error)}: {meaning}{note}", value=error)
