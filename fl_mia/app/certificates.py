"""Certificates and keys for a Flower deployment: a throw-away TLS CA, SuperNode key pairs.

Made with ``cryptography``; a consortium uses its own CA and each hospital makes its own
SuperNode key (docs/deployment.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Tls:
    """Certificates for an encrypted deployment (``--ssl-*`` on the SuperLink, ``--root-certificates``
    on SuperNodes and in the ``flwr`` connection)."""

    ca_certfile: Path
    server_certfile: Path
    server_keyfile: Path


def self_signed_tls(folder: Path, *, host: str = "127.0.0.1") -> Tls:
    """A throw-away CA and a SuperLink certificate for ``host`` (localhost tests and trials only).

    A consortium uses certificates from its own CA; the SuperLink's must name the address
    the SuperNodes dial (a subject alternative name), or TLS verification fails.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = {"not_valid_before": now - datetime.timedelta(minutes=5), "not_valid_after": now + datetime.timedelta(days=2)}

    def certificate(subject: str, key, issuer: x509.Name, issuer_key, *, ca: bool, san=None) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid["not_valid_before"])
            .not_valid_after(valid["not_valid_after"])
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san is not None:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fl-mia test CA")])
    ca_cert = certificate("fl-mia test CA", ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    try:
        san = [x509.IPAddress(ipaddress.ip_address(host))]
    except ValueError:
        san = [x509.DNSName(host)]
    server_cert = certificate(host, server_key, ca_name, ca_key, ca=False, san=[*san, x509.DNSName("localhost")])
    tls = Tls(ca_certfile=folder / "ca.pem", server_certfile=folder / "server.pem", server_keyfile=folder / "server.key")
    tls.ca_certfile.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    tls.server_certfile.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    tls.server_keyfile.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    tls.server_keyfile.chmod(0o600)
    return tls


@dataclass(frozen=True)
class SupernodeKey:
    """One SuperNode's authentication key pair: an EC (NIST P-384) key, the private half in
    OpenSSH's private-key format (what ``flower-supernode --auth-supernode-private-key``
    reads), the public half as an OpenSSH public key (what ``flwr supernode register`` reads)."""

    private_key: Path
    public_key: Path


def supernode_key(folder: Path, name: str) -> SupernodeKey:
    """A new key pair ``folder/name`` and ``folder/name.pub``, as ``ssh-keygen -t ecdsa -b 384
    -N "" -f folder/name`` would write it (the private file readable by its owner only).

    In a consortium each hospital makes its own and hands only the ``.pub`` to the SuperLink's
    operator; here one process plays every hospital.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    pair = SupernodeKey(private_key=folder / name, public_key=folder / f"{name}.pub")
    pair.private_key.touch(mode=0o600)
    pair.private_key.chmod(0o600)  # also when the file was there before
    pair.private_key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    pair.public_key.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n"
    )
    return pair
