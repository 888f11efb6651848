"""A real SMTP server for the tests (aiosmtpd, on a free port in a thread of its own): it collects
every message it is handed, for a test to wait for by recipient. Plain by default; with a TLS
context, STARTTLS (``starttls=True``) or TLS from the start, and with ``credentials`` it asks
for AUTH (as the mail servers forwardauth is pointed at do).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import ipaddress
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .support import POLL_SECONDS, free_port, wait_until

LINK = re.compile(r"https?://\S+\?token=[A-Za-z0-9_%-]+")


@dataclass(slots=True)
class Received:
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass(slots=True)
class _Collector:
    """The aiosmtpd handler: every message, parsed, with the envelope's recipients."""

    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else (envelope.content or "").encode()
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self.lock:
            self.received.append(Received(list(envelope.rcpt_tos), message))
        return "250 OK"


def self_signed(folder: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting only that server's certificate) for 127.0.0.1 and localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = folder / "smtp.crt", folder / "smtp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=cert.public_bytes(serialization.Encoding.PEM).decode())
    return server, client


class Mailbox:
    """``start()``, then point FORWARDAUTH_SMTP_URL at ``url``; ``wait_for(to)``; ``stop()``."""

    def __init__(
        self,
        tls: ssl.SSLContext | None = None,
        starttls: bool = False,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.collector = _Collector()
        self._taken: set[int] = set()  # indexes of messages wait_for returned already
        self.credentials = credentials
        self.logins: list[str] = []  # user names that authenticated
        options: dict[str, Any] = {}
        if credentials is not None:
            options |= {"authenticator": self._authenticate, "auth_require_tls": starttls}
        if tls is not None and starttls:
            options |= {"tls_context": tls, "require_starttls": True}
        elif tls is not None:
            options |= {"ssl_context": tls}
        self.scheme = "smtp+starttls" if starttls else "smtps" if tls is not None else "smtp"
        self._controller = Controller(self.collector, hostname="127.0.0.1", port=self.port, **options)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and self.credentials == (
            auth_data.login.decode(),
            auth_data.password.decode(),
        )
        if ok:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)

    def url(self, userinfo: str = "") -> str:
        """The FORWARDAUTH_SMTP_URL of this server (``userinfo``: ``user:password@``, percent-encoded)."""
        host = "localhost" if self.scheme != "smtp" else "127.0.0.1"  # the certificate's name
        return f"{self.scheme}://{userinfo}{host}:{self.port}"

    def start(self) -> Mailbox:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    @property
    def received(self) -> list[Received]:
        with self.collector.lock:
            return list(self.collector.received)

    def to(self, address: str) -> list[EmailMessage]:
        """Every message handed over for ``address`` so far."""
        return [r.message for r in self.received if address.lower() in (a.lower() for a in r.rcpt_tos)]

    def _next(self, address: str) -> EmailMessage | None:
        for index, item in enumerate(self.received):
            if index not in self._taken and address.lower() in (a.lower() for a in item.rcpt_tos):
                self._taken.add(index)
                return item.message
        return None

    def wait_for(self, to: str, timeout: float = 10.0) -> EmailMessage:
        """The next message for ``to`` not returned before, polling until ``timeout`` seconds
        (for a test whose mail is sent by another process or thread)."""
        found: EmailMessage = wait_until(lambda: self._next(to), timeout, f"a mail to {to}")
        return found

    async def arrival(self, to: str, timeout: float = 10.0) -> EmailMessage:
        """``wait_for`` for a test whose mail is sent on its own event loop (which must keep running)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self._next(to)
            if found is not None:
                return found
            await asyncio.sleep(POLL_SECONDS)
        raise AssertionError(f"timed out waiting for a mail to {to}")


def body(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None, "no text/plain part"
    return str(part.get_content()).replace("\r\n", "\n")  # as sent, not as on the wire


def link_in(message: EmailMessage) -> str:
    """The one link with a token in a message's text."""
    found = LINK.findall(body(message))
    assert len(found) == 1, f"expected one link, found {found}"
    return str(found[0])


def token_in(message: EmailMessage) -> str:
    return parse_qs(urlsplit(link_in(message)).query)["token"][0]
