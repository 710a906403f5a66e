"""The CTI protocol's rules, as data: what a client may send, what the server
answers, and what the server does when a rule is broken.

Read from xivo-ctid at wazo-19.03 (protocol 2.3) and its history back to
protocol 1.2; the facts and their sources are in PROTOCOL.md. A point marked
[inferred] was deduced from the server's code, not seen on a running server.
`cticheck --rules` prints this table; the checker (checker.py) applies it.
"""
from __future__ import annotations

from typing import NamedTuple

from ctipipe.core.protocol import VERSIONS

ALL = VERSIONS
TWO = ("2.0", "2.1", "2.2", "2.3")

# What the server does when a client breaks a rule.
CLOSES = "the server closes the connection on this"
IGNORES = "the server ignores this, without a reply"
REFUSES = "the server refuses it with an error_string"
EMPTY = "the server answers with nothing in it"
CUTS = "the server cuts the connection at 5 s"
NOTHING = ""  # the server does not react; the client (or a person) would be misled


class Rule(NamedTuple):
    id: str
    versions: tuple[str, ...]  # the protocol versions it applies to
    says: str  # the rule, in one line
    server: str  # what the server does when it is broken (empty: nothing)
    source: str  # where it comes from (PROTOCOL.md), [inferred] when deduced


RULES = (
    # --- framing
    Rule("F1", ALL, "every line is one JSON object with a string `class`: an empty line, "
         "invalid JSON, an array, a scalar or a missing class", CLOSES,
         "PROTOCOL.md §1.2, rule 1 (and the good lines read in the same recv are lost with it "
         "[inferred]: not checked, the stream does not keep the reads' boundaries)"),
    Rule("F2", ALL, "every server message carries a numeric `timenow`", NOTHING,
         "§1.2, rule 2"),
    # --- STARTTLS
    Rule("S1", ALL, "the server's STARTTLS offer {\"class\": \"starttls\"} is its first message",
         NOTHING, "§1.3, rule 3"),
    Rule("S2", ALL, "the client answers the offer with `status`: a JSON boolean", NOTHING,
         "§1.4, rule 3 (a missing status is echoed as null and nothing is upgraded)"),
    Rule("S3", ALL, "the server's echo holds the key `starttls` (not `status`, as the "
         "documentation shows) with the value the client sent", NOTHING, "§1.4, rule 3"),
    Rule("S4", ALL, "after an echo of starttls:true the next bytes are a TLS handshake",
         "the server closes the connection when the handshake fails", "§1.4, rule 4"),
    Rule("S5", ALL, "a client starttls is answered only after the server's offer, and only the "
         "first one", IGNORES, "§1.4"),
    # --- login
    Rule("L1", ALL, "before login_pass succeeds the client sends only starttls, login_id and "
         "login_pass (and login_capas in 1.2)", IGNORES, "§1.5, rule 5"),
    Rule("L2", ALL, "login_id carries `userlogin`, `company`, `ident` and one version field: "
         "`wazoversion` in 2.3, `xivoversion` in 1.2 to 2.2", CLOSES,
         "§1.6, §1.8, rule 6 (a missing version field is refused, not closed; 2.3 servers "
         "since 17.17 accept xivoversion, wazo-17.16 closed on it)"),
    Rule("L3", ALL, "login_pass carries `password` in clear in 2.x, `hashedpassword` "
         "(40 lowercase hex digits of SHA1(\"sessionid:password\")) in 1.2", CLOSES,
         "§1.6, §1.7, rule 7 (1.2 refused it with missing:hashedpassword, then closed the "
         "connection in the same turn, so the error probably never left [inferred])"),
    Rule("L4", ALL, "login_capas carries `capaid` (an int, or a string int() reads) equal to "
         "capalist[0] of the login_pass reply, and `state`; `lastconnwins` and `loginkind` are "
         "required in 1.2 and obsolete (ignored) in 2.x", CLOSES,
         "§1.6, §1.7, rule 8 (a wrong id is refused: wrong cti_profile_id; in 1.2 the "
         "socket then closed, the error probably lost [inferred])"),
    Rule("L5", ALL, "the server's login_id success holds a `sessionid` of 10 distinct "
         "[A-Za-z0-9] characters and the version under the key of its protocol", NOTHING,
         "§1.6, rule 9"),
    Rule("L6", ALL, "the login (the login_capas reply) completes within 5 s of the "
         "connection", CUTS, "§1.5, rule 10"),
    Rule("L7", ALL, "each login step is sent once per connection; after an error the client "
         "reconnects", IGNORES, "§1.5, rule 11"),
    Rule("V1", ALL, "the client's protocol version equals the server's, character for "
         "character", REFUSES, "§1.8, rule 6"),
    # --- messages
    Rule("M1", ALL, "a request carries the fields its class (and function or command) "
         "requires", CLOSES, "§2.1, rules 14, 15, 18, 19"),
    Rule("M2", ALL, "a field holds what the server can convert: int() for ints, UUID strings, "
         "alphanumeric strings, 2-item pairs", CLOSES, "§2.1, rules 14, 16, 17 (getlist "
         "updateconfig of an unknown list closing it is [inferred]: a KeyError in the lookup)"),
    Rule("M3", ALL, "the class is one the server of that version understands", IGNORES,
         "§1.2, §2.1 (removed and renamed classes)"),
    Rule("M4", ALL, "getlist `function`, ipbxcommand `command`, featuresput `function` and "
         "subscribe `message` are ones the server knows (a missing one is M1)", IGNORES,
         "§1.2, §2.1, rule 19; the command registry's match functions"),
    Rule("M5", ALL, "a value the server silently drops: featuresput values other than JSON "
         "booleans, an unknown getlist listname, updateconfig/updatestatus without `tid`",
         "the server does nothing with it, or answers empty", "§2.1, rules 18, 19 (featuresput: the "
         "registry matches value == True or False, so 1 and 0 match too and \"true\" does not; "
         "PROTOCOL.md marks it [inferred], set_user_service.py shows it)"),
    # --- replies
    Rule("R1", ALL, "a request the server answers gets its answer before the session ends",
         NOTHING, "§1.9, §2.1"),
    Rule("R2", ALL, "a reply's `replyid` is the `commandid` of a request of this session "
         "(the fax tracking ipbxcommand's replyid is a server file id, never matched)",
         NOTHING, "§1.9, rule 13"),
    Rule("R3", TWO, "in 2.x only directory, getipbxlist, keepalive, faxsend, getqueuesstats and "
         "the fax tracking ipbxcommand carry `replyid`: login_*, getlist, history, people_* and "
         "the rest do not", NOTHING, "§1.9, rule 12"),
    # --- errors
    Rule("E1", ALL, "an error_string from the server, explained", NOTHING, "§3"),
    Rule("E2", TWO, "in 2.x an error_string never closes the connection: a close right after "
         "one is the login timeout or not a 2.x server", NOTHING, "§1.5, rule 20"),
)

BY_ID = {rule.id: rule for rule in RULES}

# --- what a client may send -------------------------------------------------
#
# For each class the server understands at 2.3: its `required` fields (a
# missing one closes the connection, M1) with what the server makes of the
# value (M2), and for classes dispatched on a field, the known values of that
# field and each one's own fields. The server reads the dispatch field as
# msg['function'] (or 'command', 'message') in every variant's match, so a
# message without it closes the connection. Field kinds:
#   any       read as is
#   int       int() must accept it: an integer, or a string of digits
#   str-alnum a string whose characters are all letters or digits
#   pairs     a list of 2-item lists
#   listname  one of LISTNAMES
#   meetme    a list of two alphanumeric strings
#   bool      a JSON boolean (M5: anything else is silently dropped)
#   fwd       an object where each enableX comes with its destX (a number or null
#             closes the connection: `in` fails on it; a string or list is ignored)
#   chat-to   [xivo_uuid, user_uuid] from 2.1, [xivo_uuid, positive int] in 2.0
# `hint` names a field the documentation spells differently.

LISTNAMES = frozenset(("users", "phones", "agents", "queues", "voicemails", "meetmes",
                       "queuemembers"))

CLIENT_CLASSES: dict[str, dict] = {
    "starttls": {},
    "login_id": {"required": {"company": "any", "ident": "any", "userlogin": "any"}},
    "login_pass": {},  # per version: L3
    "login_capas": {},  # per version: L4
    "logout": {},
    "getlist": {"dispatch": "function", "dispatch_required": True, "variants": {
        "listid": {"required": {"listname": "any"}},
        "updateconfig": {"required": {"listname": "any"}, "tid": True},
        "updatestatus": {"required": {"listname": "any"}, "tid": True},
    }},
    "availstate": {"required": {"availstate": "any"}},
    "featuresput": {"dispatch": "function", "dispatch_required": True, "variants": {
        "enablednd": {"required": {"value": "bool"}},
        "incallfilter": {"required": {"value": "bool"}},
        "enablerecording": {"required": {"value": "bool"}},
        "fwd": {"required": {"value": "fwd"}},
    }},
    "ipbxcommand": {"dispatch": "command", "dispatch_required": True, "variants": {
        "dial": {"required": {"destination": "any"}},
        "agentlogin": {},
        "agentlogout": {},
        "listen": {"required": {"destination": "any"}},
        "queueadd": {}, "queueremove": {}, "queuepause": {}, "queueunpause": {},
        "meetme": {"required": {"function": "any", "functionargs": "meetme"}},
    }},
    "hangup": {},
    "attended_transfer": {"required": {"number": "any"}},
    "direct_transfer": {"required": {"number": "any"}},
    "cancel_transfer": {},
    "complete_transfer": {},
    "blind_transfer_voicemail": {"required": {"voicemail": "str-alnum"}},
    "attended_transfer_voicemail": {"required": {"voicemail": "str-alnum"}},
    "answer": {"required": {"unique_id": "any"}, "hint": {"uniqueid": "unique_id"}},
    "hold_switchboard": {"required": {"queue_name": "any"}},
    "resume_switchboard": {"required": {"unique_id": "any"}, "hint": {"uniqueid": "unique_id"}},
    "subscribe": {"dispatch": "message", "dispatch_required": True, "variants": {
        "current_calls": {}, "meetme_update": {},
        "queueentryupdate": {"required": {"queueid": "int"}},
    }},
    "subscribetoqueuesstats": {},
    "register_agent_status_update": {"required": {"agent_ids": "pairs"}},
    "unregister_agent_status_update": {"required": {"agent_ids": "pairs"}},
    "register_endpoint_status_update": {"required": {"endpoint_ids": "pairs"}},
    "unregister_endpoint_status_update": {"required": {"endpoint_ids": "pairs"}},
    "register_user_status_update": {"required": {"user_ids": "pairs"}},
    "unregister_user_status_update": {"required": {"user_ids": "pairs"}},
    "directory": {},
    "get_switchboard_directory_headers": {},
    "switchboard_directory_search": {},
    "people_headers": {}, "people_search": {}, "people_favorites": {},
    "people_set_favorite": {}, "people_personal_contacts": {},
    "people_purge_personal_contacts": {}, "people_personal_contact_raw": {},
    "people_create_personal_contact": {}, "people_delete_personal_contact": {},
    "people_edit_personal_contact": {}, "people_import_personal_contacts_csv": {},
    "people_export_personal_contacts_csv": {}, "get_relations": {},
    "history": {"required": {"size": "int"}},
    "chitchat": {"required": {"alias": "any", "to": "chat-to", "text": "any"}},
    "call_form_result": {},
    "getipbxlist": {}, "keepalive": {},
    "faxsend": {"required": {"size": "any", "data": "any", "destination": "any"}},
    "getqueuesstats": {},
}

# Classes that once existed: from which protocol version on they are gone,
# and what replaced them. (Removals inside 1.2, without a version bump, are
# flagged from 2.0: a 1.2 server may still know them.)
REMOVED_CLASSES = {
    "invite_confroom": ("2.2", "removed in XiVO 16.09"),
    "filetransfer": ("2.0", "removed in XiVO 15.18"),
    "logfromclient": ("2.0", "removed in XiVO 14.24"),
    "actionfiche": ("2.0", "renamed call_form_result in XiVO 13.22"),
    "unhold_switchboard": ("2.0", "renamed resume_switchboard in XiVO 14.05"),
}
REMOVED_COMMANDS = {  # ipbxcommand `command` values
    "originate": ("2.0", "removed in XiVO 15.19; use dial"),
    "hangup": ("2.0", "removed in XiVO 15.19; use the class hangup"),
    "transfer": ("2.0", "removed in XiVO 15.19; use direct_transfer"),
    "atxfer": ("2.0", "removed in XiVO 15.19; use attended_transfer"),
    "mailboxcount": ("2.0", "removed in XiVO 15.19"),
    "record": ("2.0", "removed in XiVO 14.24"),
    "sipnotify": ("2.0", "removed in XiVO 14.24"),
}

# What the client may send before login_pass succeeds (L1).
BEFORE_LOGIN = {"1.2": frozenset(("starttls", "login_id", "login_pass", "login_capas"))}
BEFORE_LOGIN_2 = frozenset(("starttls", "login_id", "login_pass"))

LOGIN_TIMEOUT = 5.0  # seconds from the connection to the login_capas reply (client.login_timeout)

# The version field of login_id, per protocol version (L2, L5).
VERSION_KEY = {"1.2": "xivoversion", "2.0": "xivoversion", "2.1": "xivoversion",
               "2.2": "xivoversion", "2.3": "wazoversion"}

# --- what the server's error strings mean (E1) ------------------------------
# error_string (or its prefix before ':') -> (versions, what it tells a person)
ERRORS = {
    "wazoversion_client": (("2.3",), "the client speaks CTI protocol {0} but the server "
                           "speaks {1}: install a matching client"),
    "xivoversion_client": (("1.2", "2.0", "2.1", "2.2"), "the client speaks CTI protocol {0} "
                           "but the server speaks {1}: install a matching client"),
    "login_password": (ALL, "wrong login or password, or the user has no CTI profile / "
                       "client access"),
    "xivo_auth_error": (TWO, "the authentication service (wazo-auth) failed: a server-side "
                        "problem"),
    "user_not_found": (TWO, "authenticated, but the CTI server does not know this user "
                       "(configuration out of sync)"),
    "wrong cti_profile_id": (ALL, "login_capas must echo the id received in "
                             "login_pass.capalist"),
    "unknown cti_profile_id": (ALL, "the user's CTI profile is missing in the server "
                               "configuration"),
    "capaid_undefined": (("1.2",), "no CTI profile assigned to the user"),
    "missing": (("1.2",), "required login fields are missing: {0}"),
    "notloggedyet": (("1.2",), "finish the login handshake (login_capas) first"),
    "agent_login_invalid_exten": (ALL, "agent login failed: invalid agent or extension"),
    "agent_login_exten_in_use": (ALL, "the extension is already used by another agent"),
    "unreachable_extension": (ALL, "destination {0} cannot be reached"),
    "call_unauthorized": (ALL, "the server refused the call (authorization); a new login "
                          "may be needed"),
    "hangup_unauthorized": (ALL, "the server refused the hangup (authorization); a new "
                            "login may be needed"),
    "transfer_unauthorized": (ALL, "the server refused the transfer (authorization); a new "
                              "login may be needed"),
    "service_unavailable": (ALL, "the call-control service (wazo-ctid-ng) is unavailable"),
}


def rules_text() -> str:
    """The table as `cticheck --rules` prints it."""
    lines = []
    for rule in RULES:
        versions = "all versions" if rule.versions == ALL else ", ".join(rule.versions)
        lines.append(f"{rule.id}  ({versions}) {rule.says}.")
        if rule.server:
            lines.append(f"    When broken: {rule.server}.")
        lines.append(f"    Source: {rule.source}.")
    return "\n".join(lines) + "\n"
