"""TLS for the relay's two legs, and the certificate it presents to clients.

The real XiVO CTI server speaks TLS 1.0 only, which OpenSSL 3 refuses unless a
context allows it: every context here accepts TLS 1.0 to 1.3. The relay's own
certificate is made on first use and kept in the user's data directory, so a
client that pinned it keeps working; `cryptography`, which makes it, is only
imported then (it costs tens of milliseconds of start-up).
"""
from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import os
import re
import ssl
import stat
import warnings
from pathlib import Path

from ctipipe.core.cli import CommandError
from ctipipe.relay.subject import subject as subject_of

CERT_NAME = "relay-cert.pem"  # what relay_certificate() names the relay's pair
KEY_NAME = "relay-key.pem"

# OpenSSL 3's default security level forbids TLS 1.0 and its SHA-1 signatures;
# level 0 lets the real XiVO server's TLS 1.0 through while still preferring
# the strongest cipher both sides have.
CIPHERS = "DEFAULT:@SECLEVEL=0"

# Long enough never to expire under a user; the certificate is self-signed,
# so its validity protects nothing.
VALID_DAYS = 3650

# RSA rather than ECDSA: TLS 1.0 clients of the XiVO era all speak RSA.
KEY_BITS = 2048


def data_dir() -> Path:
    """Where ctipipe keeps the relay's certificate ($XDG_DATA_HOME/ctipipe).

    A relative XDG_DATA_HOME is ignored, as the XDG rules say: it would give
    each working directory a certificate of its own, and break a client that
    pinned the first one."""
    base = os.environ.get("XDG_DATA_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "ctipipe"


def _refuse_unsafe(path: Path, kind: str) -> None:
    """The relay's folder, certificate and key must be ours and writable by us
    only (the key readable by us only): another user who could write them
    could have planted the key that clients are shown. A link is refused, not
    followed. KIND is "folder", "certificate" or "key"; a missing path is fine."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as error:
        raise CommandError(f"cannot keep the relay's certificate: {path}: "
                           f"{error.strerror or error}") from None
    mode = stat.S_IMODE(info.st_mode)
    loose = mode & (0o077 if kind == "key" else 0o022)
    if stat.S_ISLNK(info.st_mode):
        why, fix = "is a symbolic link", "remove it and run again"
    elif info.st_uid != os.geteuid():
        why, fix = f"belongs to another user (uid {info.st_uid})", "remove it and run again"
    elif loose:
        why = f"can be {'read or written' if kind == 'key' else 'written'} by other users (mode {mode:o})"
        fix = f"'chmod {mode & ~loose:o} {path}' if you trust it, or remove it and run again"
    else:
        return
    raise CommandError(f"the relay's {kind} {path} {why}: {fix}")


def relay_certificate(directory: Path | None = None, *, name: str = "relay",
                      subject: str = "ctipipe relay") -> tuple[Path, Path, bool]:
    """The relay's certificate and key files, made now if they do not exist.

    Another program's own pair (the demo server's) gets its own file names
    (`name`-cert.pem, `name`-key.pem) and subject (CN=`subject`), so that
    nobody takes one for the other.

    Returns (cert, key, made). Two relays starting at once make one pair
    between them: the making is done under a lock, and the files are written
    under temporary names and renamed, the key first, so a certificate file
    that exists always has its key beside it.
    """
    directory = directory or data_dir()
    cert, key = directory / f"{name}-cert.pem", directory / f"{name}-key.pem"
    _refuse_unsafe(directory, "folder")
    if _trusted(cert, key):
        return cert, key, False
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        _refuse_unsafe(directory, "folder")
        # O_NOFOLLOW and no O_TRUNC: a link planted as .lock truncates nothing.
        try:
            fd = os.open(directory / ".lock",
                         os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise CommandError(f"the relay's lock file {directory / '.lock'} is a symbolic "
                                   f"link: remove it and run again") from None
            raise
        with open(fd, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _trusted(cert, key):
                return cert, key, False
            cert_pem, key_pem = _make_certificate(subject)
            _write_atomically(key, key_pem, 0o600)
            _write_atomically(cert, cert_pem, 0o644)
    except OSError as error:
        raise CommandError(f"cannot keep the relay's certificate in {directory}: "
                           f"{error.strerror or error}") from None
    return cert, key, True


def _trusted(cert: Path, key: Path) -> bool:
    """True when both files exist and are safe to use; one line and exit otherwise."""
    _refuse_unsafe(key, "key")
    _refuse_unsafe(cert, "certificate")
    return cert.exists() and key.exists()


def _make_certificate(subject: str) -> tuple[bytes, bytes]:
    """A self-signed certificate and its private key, both PEM."""
    # Imported here: a relay whose certificate already exists never pays for it.
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    private = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ctipipe")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    key_pem = private.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def fingerprint(cert: Path | str) -> str:
    """The certificate's SHA-256 fingerprint, as `openssl x509 -fingerprint` shows it."""
    return _sha256(der(cert))


def _allow_old_versions(context: ssl.SSLContext) -> ssl.SSLContext:
    with warnings.catch_warnings():  # Python deprecates naming TLS 1.0; we need it
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers(CIPHERS)
    # A peer that ends its side with a bare TCP FIN (as the XiVO server and
    # client do) has half-closed, not broken the session: without this flag
    # OpenSSL 3 takes that EOF as fatal and the other direction could no
    # longer be written.
    context.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    return context


def open_keylog(path: Path | str) -> str:
    """Make ready the NSS key log file (SSLKEYLOGFILE format) that the contexts
    append the secrets of every TLS session to, so that Wireshark can decrypt a
    capture of them: created mode 0600 (it holds keys), appended to when it
    exists (narrowed to 0600 first if others could read it), refused when it is a symbolic link (the secrets could be sent
    anywhere). Python's SSLContext opens it by name afterwards, in append mode."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except OSError as error:
        why = ("it is a symbolic link, refused: the TLS secrets could be written anywhere"
               if error.errno == errno.ELOOP else _why(error))
        raise CommandError(f"cannot write the TLS key log {path}: {why}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CommandError(f"cannot write the TLS key log {path}: not a regular file")
        if info.st_mode & 0o077:
            os.fchmod(fd, 0o600)  # an existing file others could read: narrowed, as ctisplit does
    except OSError as error:
        raise CommandError(f"cannot make the TLS key log {path} private: {_why(error)}") from None
    finally:
        os.close(fd)
    return str(path)


def _keylog(context: ssl.SSLContext, keylog: str | None) -> ssl.SSLContext:
    if keylog is not None:
        context.keylog_filename = keylog
    return context


def client_leg_context(cert: Path | str, key: Path | str, keylog: str | None = None) -> ssl.SSLContext:
    """The relay as a TLS server to CTI clients, presenting cert (secrets
    appended to keylog, made ready by open_keylog, when given)."""
    context = _keylog(_allow_old_versions(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)), keylog)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as error:
        why = ("the key does not match the certificate" if error.reason == "KEY_VALUES_MISMATCH"
               else "not a PEM certificate and its private key")
        raise CommandError(f"cannot use the certificate {cert} with the key {key}: {why}") from None
    except OSError as error:
        raise CommandError(f"cannot use the certificate {cert} with the key {key}: "
                           f"{_why(error)}") from None
    return context


def server_leg_context(server_ca: Path | str | None = None, keylog: str | None = None) -> ssl.SSLContext:
    """The relay as a TLS client to the CTI server (secrets appended to keylog
    when given).

    Without server_ca the server's certificate is not checked, as the XiVO
    client itself does not check it; with it, the certificate must chain to
    one of those CAs (the name is not checked: sites reach their server by
    addresses their certificate seldom names).
    """
    context = _keylog(_allow_old_versions(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)), keylog)
    context.check_hostname = False
    if server_ca is None:
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        context.load_verify_locations(cafile=str(server_ca))
    except (OSError, ssl.SSLError) as error:
        raise CommandError(f"cannot use --server-ca {server_ca}: {_why(error)}") from None
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def describe(ssl_object, *, certificate: bytes | None = None,
             verified: bool | None = None) -> dict:
    """A leg as the `tls` event shows it: {"version": "TLSv1", "cipher": "...", ...}.

    The server leg (`verified` given: --server-ca or not) adds the certificate
    the server presented: "subject", "sha256" and "verified". The client leg
    adds the certificate the relay presented to the client (`certificate`,
    DER): "subject" and "sha256" (whether the client checked it, the relay
    cannot know).
    """
    cipher = ssl_object.cipher()
    described = {"version": ssl_object.version(), "cipher": cipher[0] if cipher else None}
    if verified is not None:
        certificate = ssl_object.getpeercert(binary_form=True)
    if certificate:
        described.update(summary(certificate))
    if verified is not None:
        described["verified"] = bool(verified and certificate)
    return described


@functools.lru_cache(maxsize=64)
def summary(certificate: bytes) -> dict:
    """A certificate's subject ("CN=xivo,O=Avencall") and SHA-256 fingerprint.

    Cached: a relay sees the same few certificates in every session.
    """
    return {"subject": subject_of(certificate), "sha256": _sha256(certificate)}


def _sha256(der: bytes) -> str:
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def der(cert: Path | str) -> bytes:
    """The certificate file's first certificate, DER."""
    try:
        return ssl.PEM_cert_to_DER_cert(Path(cert).read_text())
    except (OSError, ValueError) as error:
        raise CommandError(f"cannot read the certificate {cert}: {_why(error)}") from None


def handshake_error(error: BaseException) -> str:
    """Why a handshake failed, in a few words ("wrong version number")."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"certificate did not verify ({error.verify_message})"
    if isinstance(error, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return "connection closed during the handshake"
    if isinstance(error, ssl.SSLError):
        reason = getattr(error, "reason", None)  # set by OpenSSL's side, not always
        return reason.lower().replace("_", " ") if reason else _without_source(error)
    cause = error.__cause__ or error.__context__
    if cause is not None and cause is not error and isinstance(cause, (ssl.SSLError, OSError)):
        return handshake_error(cause)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return "connection closed during the handshake"


def _why(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError) and getattr(error, "reason", None):
        return error.reason.lower().replace("_", " ")
    if isinstance(error, ssl.SSLError):
        return _without_source(error)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


def _without_source(error: ssl.SSLError) -> str:
    """OpenSSL's text without the place in CPython's source ("(_ssl.c:1006)")."""
    text = error.strerror or str(error)
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text)
