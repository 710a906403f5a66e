"""What the CTI protocol answers, as data: which replies carry `replyid`,
and which client requests the server never answers (xivo-ctid at wazo-19.03,
protocol 2.3; /work/shared/design/PROTOCOL.md §1.4, §1.9, §2.1).

The one place ctistat, ctireport and cticheck learn what a request should
get back, so that they never disagree. Pure data and one small function.
"""
from __future__ import annotations

# The protocol version xivo-ctid speaks at wazo-19.03, and every version a
# checker knows (the version history of PROTOCOL.md §4).
SERVER_VERSION = "2.3"
VERSIONS = ("1.2", "2.0", "2.1", "2.2", "2.3")

# Replies that carry `replyid` in 2.x (§1.9): the legacy classes echo a
# truthy `commandid`, `directory` echoes it even when null, and the fax
# tracking `ipbxcommand` carries a server-made file id, not a commandid.
# In 1.2 the login replies carried it too (§1.7).
REPLYID_CLASSES = frozenset(("getipbxlist", "keepalive", "faxsend", "getqueuesstats",
                             "directory", "ipbxcommand"))
REPLYID_CLASSES_1_2 = REPLYID_CLASSES | {"login_id", "login_pass", "login_capas"}

# The legacy classes whose replyid is the commandid only when it is truthy.
LEGACY_REPLYID = frozenset(("getipbxlist", "keepalive", "faxsend", "getqueuesstats"))

# Client classes the server never answers with a message of their own (§2.1):
# they act and say nothing, or the effect comes later as a broadcast
# (`getlist` updates, `meetme_update`, ...) that answers no request.
NO_REPLY_CLASSES = frozenset((
    "logout",  # sets the presence `disconnected`; the socket stays open [inferred]
    "availstate",  # a later broadcast getlist updatestatus users
    "featuresput",  # a broadcast getlist updateconfig users once the bus event comes
    "ipbxcommand",  # nothing on success; errors come as ipbxcommand error_string
    "hangup", "attended_transfer", "direct_transfer", "cancel_transfer",
    "complete_transfer", "blind_transfer_voicemail", "attended_transfer_voicemail",
    "answer", "hold_switchboard", "resume_switchboard",
    "subscribe", "subscribetoqueuesstats",  # the subscribed events follow, unnumbered
    "register_agent_status_update", "unregister_agent_status_update",
    "register_endpoint_status_update", "unregister_endpoint_status_update",
    "register_user_status_update", "unregister_user_status_update",
    "chitchat",  # the recipient gets it, the sender nothing
    "call_form_result",
))


def reply_expected(message: dict, offered: bool, starttls_asked: bool) -> bool:
    """Does the server answer this client message?

    `offered`: the server sent its STARTTLS offer on this connection;
    `starttls_asked`: the client already sent a `starttls` before this one.
    Only the first `starttls` after an offer is answered (§1.4): a client's
    second one, or one with no offer made, gets nothing.
    """
    name = message.get("class")
    if name == "starttls":
        return offered and not starttls_asked
    # (a class that is not a string is the server's to refuse, not ours to skip)
    return type(name) is not str or name not in NO_REPLY_CLASSES

# The class of the answer to each client class, where it differs from the
# request's own (§2.1). `getlist` answers carry the request's function and
# listname (and tid for updateconfig/updatestatus); a `history` answer for a
# user with no line is a message without class.
REPLY_CLASS = {
    "get_switchboard_directory_headers": "directory_headers",
    "switchboard_directory_search": "directory_search_result",
    "people_headers": "people_headers_result",
    "people_search": "people_search_result",
    "people_favorites": "people_favorites_result",
    "people_set_favorite": "people_favorite_update",
    "people_personal_contacts": "people_personal_contacts_result",
    "people_purge_personal_contacts": "people_personal_contacts_purged",
    "people_personal_contact_raw": "people_personal_contact_raw_result",
    "people_create_personal_contact": "people_personal_contact_created",
    "people_delete_personal_contact": "people_personal_contact_deleted",
    "people_edit_personal_contact": "people_personal_contact_raw_update",
    "people_import_personal_contacts_csv": "people_import_personal_contacts_csv_result",
    "people_export_personal_contacts_csv": "people_export_personal_contacts_csv_result",
    "get_relations": "relations",
}


def answer_key(message: dict, side: str) -> tuple | None:
    """What an answer without `replyid` looks like, so that it can be paired
    with its request: for a client request, the answer it waits for; for a
    server message without `replyid`, the request it answers. None: nothing
    to pair (a request the server does not answer, the STARTTLS offer, a
    message that carries `replyid`).

    The 2.x login replies and the STARTTLS answer go by class (§1.6, §1.4), a
    `getlist` answer by its function, list and id (§2.2), the directory and
    people answers by the class REPLY_CLASS names (§2.1), a `history` answer
    for a user with no line has no class at all.
    """
    name = message.get("class")
    if name == "getlist":
        function, listname = str(message.get("function")), str(message.get("listname"))
        if function == "listid":
            return ("getlist", function, listname)
        return ("getlist", function, listname, str(message.get("tid")))
    if side == "client":
        if type(name) is not str or name in NO_REPLY_CLASSES:
            return None
        return (REPLY_CLASS.get(name, name),)
    if "replyid" in message or (name == "starttls" and "starttls" not in message):
        return None  # numbered, or the offer (the answer holds the key "starttls")
    return (name,) if type(name) is str else ("history",) if name is None else None
