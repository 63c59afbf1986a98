"""The hub's private CA and its TLS server certificate, made once per data directory.

The device SDK verifies the server name (``check_hostname``), so the server certificate
names every address a client may dial: localhost, 127.0.0.1, ::1 and the configured host.
"""

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .files import tighten, write_private

VALID_DAYS = 3650


def _names(host: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for item in dict.fromkeys(["localhost", "127.0.0.1", "::1", host]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(item)))
        except ValueError:
            names.append(x509.DNSName(item))
    return names


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _make_ca(data_dir: Path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhub private CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    write_private(data_dir / "ca-key.pem", _key_pem(key))
    write_private(data_dir / "ca.pem", cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def _covers(cert_path: Path, host: str) -> bool:
    if not cert_path.exists():
        return False
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return all(name in san for name in _names(host))


def ensure(data_dir: Path, host: str) -> tuple[Path, Path, Path]:
    """Return (ca.pem, server.pem, server-key.pem), creating what is missing.

    The CA is kept for the life of the data directory, so clients that trust it keep
    working; the server certificate is remade when the host it must name changes.
    """
    ca_path, ca_key_path = data_dir / "ca.pem", data_dir / "ca-key.pem"
    cert_path, key_path = data_dir / "server.pem", data_dir / "server-key.pem"
    tighten(ca_path, ca_key_path, cert_path, key_path)
    if ca_path.exists() and ca_key_path.exists():
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
    else:
        ca_key, ca_cert = _make_ca(data_dir)
        cert_path.unlink(missing_ok=True)
    if not _covers(cert_path, host):
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(_names(host)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        write_private(key_path, _key_pem(key))
        write_private(
            cert_path,
            cert.public_bytes(serialization.Encoding.PEM)
            + ca_cert.public_bytes(serialization.Encoding.PEM),
        )
    return ca_path, cert_path, key_path
