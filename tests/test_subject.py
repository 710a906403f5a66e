"""A certificate's subject read from its DER without a library, against cryptography's reading."""
import datetime

import pytest
from hypothesis import given, settings, strategies as st
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ctipipe.relay.subject import subject

KEY = ec.generate_private_key(ec.SECP256R1())
EMAIL = {NameOID.EMAIL_ADDRESS: "emailAddress"}


def _der(name: x509.Name) -> bytes:
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(KEY.public_key()).serial_number(12345)
               .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1)))
    return builder.sign(KEY, hashes.SHA256()).public_bytes(Encoding.DER)


def _expected(name: x509.Name) -> str:
    """cryptography's RFC 4514 reading, in the certificate's order (as openssl shows it)."""
    return ",".join(rdn.rfc4514_string(EMAIL) for rdn in name.rdns)


A = x509.NameAttribute
NAMES = {
    "relay": x509.Name([A(NameOID.COMMON_NAME, "ctipipe relay"), A(NameOID.ORGANIZATION_NAME, "ctipipe")]),
    "xivo": x509.Name([A(NameOID.COUNTRY_NAME, "FR"), A(NameOID.STATE_OR_PROVINCE_NAME, "Québec"),
                       A(NameOID.LOCALITY_NAME, "Lyon"), A(NameOID.ORGANIZATION_NAME, "Avencall"),
                       A(NameOID.ORGANIZATIONAL_UNIT_NAME, "XiVO"), A(NameOID.COMMON_NAME, "xivo"),
                       A(NameOID.EMAIL_ADDRESS, "root@xivo")]),
    "specials": x509.Name([A(NameOID.COMMON_NAME, 'a,b+c"d\\e<f>g;h=i'),
                           A(NameOID.ORGANIZATION_NAME, " #lead and trail ")]),
    "multi-valued": x509.Name([x509.RelativeDistinguishedName(
        [A(NameOID.COMMON_NAME, "x"), A(NameOID.USER_ID, "y")]), x509.RelativeDistinguishedName(
        [A(NameOID.DOMAIN_COMPONENT, "example")])]),
    "unknown type": x509.Name([A(x509.ObjectIdentifier("1.3.6.1.4.1.99999.7"), "custom")]),
    "empty": x509.Name([]),
}


@pytest.mark.parametrize("name", NAMES.values(), ids=NAMES.keys())
def test_subject_as_cryptography_reads_it(name):
    assert subject(_der(name)) == _expected(name)


@pytest.mark.parametrize("data", [b"", b"\x30", b"\x30\x82\xff\xff", b"\x04\x00", b"junk" * 10,
                                  b"\x30\x03\x30\x01\x00"])
def test_what_is_not_a_certificate_is_none(data):
    assert subject(data) is None


XIVO = _der(NAMES["xivo"])  # once: an ECDSA signature differs at every signing


@settings(max_examples=200)
@given(st.data())
def test_a_cut_or_damaged_certificate_is_none_or_a_string(data):
    der = bytearray(XIVO)
    cut = data.draw(st.integers(0, len(der)))
    at = data.draw(st.integers(0, len(der) - 1))
    der[at] = data.draw(st.integers(0, 255))
    result = subject(bytes(der[:cut]))
    assert result is None or isinstance(result, str)


def test_showing_a_certificate_loads_no_library(tmp_path):
    """Reading a peer's subject must not load cryptography (a second OpenSSL, ~10 MB)."""
    import subprocess
    import sys
    path = tmp_path / "cert.der"
    path.write_bytes(XIVO)
    script = ("import sys; from ctipipe.relay import certs; "
              f"print(certs.summary(open({str(path)!r}, 'rb').read())['subject']); "
              "print(any(m.startswith('cryptography') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-P", "-c", script], capture_output=True, text=True,
                         timeout=30)
    assert out.stdout.splitlines() == [_expected(NAMES["xivo"]), "False"], out.stderr
