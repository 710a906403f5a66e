"""The relay's TLS: the STARTTLS switch, implicit TLS, and the handshakes.

A session whose TLS is intercepted runs in up to two phases:

1. Before the login, plain: two watching pumps forward every read as the
   plain pumps do and show it to the session's STARTTLS watcher
   (starttls.py). When the watcher is done (not a STARTTLS session, or
   refused), each pump hands over to the plain pump, which pays nothing for
   TLS from then on. When the server answers the request with
   `"starttls": true`, the client's pump is stopped *before* that answer is
   forwarded: the client sends its ClientHello only after reading the answer,
   so no byte it sends after it can cross the switch in plain.
2. After the answer: both handshakes at once (the real server drops a client
   that has not begun its handshake within 0.5 s), a `tls` event, then two
   pumps that forward and record the plaintext (pumps.encrypted). Each leg is
   an SSLObject over memory buffers and the plain socket rather than a
   trio.SSLStream: a round trip then costs the TLS work and the system calls,
   and the scheduler only when a socket must be waited for.

With `--starttls pass` the answer is followed by a `tls` event with
`"intercepted": false` and the encrypted bytes are forwarded unrecorded.
"""
from __future__ import annotations

import ssl
import time
from dataclasses import dataclass, field

import trio

from ctipipe.core import stream
from ctipipe.relay import certs, pumps
from ctipipe.relay.session import HANDSHAKE_TIMEOUT, Session

# A peer that has sent nothing at all of its handshake is given up on sooner:
# a real client begins at once, and one that connects and waits holds a
# place among the sessions in their handshakes (limits.MAX_HANDSHAKES). With
# --tls the relay waits as long for the client's first bytes before it connects
# to the server, and may close it sooner for a new client (command.Relay._client_spoke).
SILENT_HANDSHAKE_TIMEOUT = 10.0


@dataclass
class Options:
    """How the relay treats TLS, from its command line."""
    starttls: str  # "intercept" or "pass"
    implicit: bool  # --tls: TLS from the first byte
    client_context: ssl.SSLContext | None  # the relay as a server to clients
    server_context: ssl.SSLContext  # the relay as a client to the server
    verified: bool  # --server-ca given
    said_unverified: bool = False  # told the user once that the server is not verified
    # Lines for standard error once the relay listens: (shown without -v too, text).
    notes: tuple = ()
    # The relay's own certificate (PEM file) as clients see it, for the `tls` event.
    cert: str | None = None
    # The relay's sessions in their handshakes (limits.Sessions), None: not counted.
    sessions: object = None
    _shown: dict = field(default_factory=dict)


async def run_session(session: Session, options: Options, say) -> None:
    """Relay one session whose TLS the relay handles (see the module's docstring).

    `say` writes one line on standard error (the relay's notices).
    """
    if options.implicit:
        await _upgraded(session, options, "implicit", say)
        return
    watch = pumps.Watch()
    switched: list[bool] = []

    async def pump(direction) -> None:
        if await pumps.watching(session, direction, watch):
            switched.append(True)

    async with trio.open_nursery() as phase:
        session.scope = phase.cancel_scope
        phase.start_soon(pump, session.client)
        phase.start_soon(pump, session.server)
    if switched and session.error is None:
        await _upgraded(session, options, "starttls", say)


async def _upgraded(session: Session, options: Options, how: str, say) -> None:
    if options.starttls == "pass":
        await _passed(session, how)
    else:
        await _intercepted(session, options, how, say)


async def _intercepted(session: Session, options: Options, how: str, say) -> None:
    """Both handshakes at once, the `tls` event, then the plaintext relayed and recorded."""
    implicit = how == "implicit"  # a plain port or client is the likely mistake
    client = pumps.Leg(session.client, options.client_context, True, note_first=implicit)
    server = pumps.Leg(session.server, options.server_context, False, note_first=implicit)
    if options.sessions is not None:
        options.sessions.handshaking(session.conn)
    async with trio.open_nursery() as handshakes:
        session.scope = handshakes.cancel_scope
        for leg in (client, server):
            leg.direction.state = "handshake"
            handshakes.start_soon(_handshake, session, leg)
    if options.sessions is not None:
        options.sessions.past(session.conn)
    if session.error is not None:
        return
    client.direction.state = server.direction.state = "tls"
    described = {"client": certs.describe(client.tls, certificate=_relay_certificate(options)),
                 "server": certs.describe(server.tls, verified=options.verified)}
    if not options.verified and not options.said_unverified:
        options.said_unverified = True
        say("the server's TLS certificate is not verified (as the XiVO client does "
            "not verify it); give --server-ca to verify it")
    session.tap.opened(session.record, stream.event_record(
        time.time(), session.conn, "tls", how=how, intercepted=True, **described))
    session.log(f"session {session.conn}: TLS ({how}) intercepted: client "
                f"{described['client']['version']} {described['client']['cipher']}, server "
                f"{described['server']['version']} {described['server']['cipher']}")
    async with trio.open_nursery() as phase:
        session.scope = phase.cancel_scope
        phase.start_soon(pumps.encrypted, session, client, server)
        phase.start_soon(pumps.encrypted, session, server, client)


def _relay_certificate(options: Options) -> bytes | None:
    """The DER of the certificate the relay shows clients (read once)."""
    if options.cert is None:
        return None
    if "der" not in options._shown:
        options._shown["der"] = certs.der(options.cert)
    return options._shown["der"]


async def _handshake(session: Session, leg: pumps.Leg) -> None:
    """One leg's handshake, given up on when the peer sends nothing of it within
    SILENT_HANDSHAKE_TIMEOUT, or has not completed it within HANDSHAKE_TIMEOUT."""
    started = trio.current_time()
    try:
        with trio.fail_after(min(SILENT_HANDSHAKE_TIMEOUT, HANDSHAKE_TIMEOUT)) as deadline:
            def heard() -> None:
                deadline.deadline = started + HANDSHAKE_TIMEOUT
            await leg.handshake(heard)
    except trio.TooSlowError:
        silent = deadline.deadline < started + HANDSHAKE_TIMEOUT
        session.fail(leg.direction.side, trio.TooSlowError(
            f"sent nothing of its TLS handshake within {SILENT_HANDSHAKE_TIMEOUT:g} s")
            if silent else trio.TooSlowError())
    except OSError as error:  # ssl.SSLError is an OSError
        session.fail(leg.direction.side, error)


async def _passed(session: Session, how: str) -> None:
    """--starttls pass: the encrypted bytes both ways, counted, not recorded."""
    session.tap.opened(session.record, stream.event_record(
        time.time(), session.conn, "tls", how=how, intercepted=False))
    session.log(f"session {session.conn}: TLS ({how}) passed on encrypted, not recorded")
    async with trio.open_nursery() as phase:
        session.scope = phase.cancel_scope
        phase.start_soon(lambda: pumps.plain(session, session.client, record=False))
        phase.start_soon(lambda: pumps.plain(session, session.server, record=False))
