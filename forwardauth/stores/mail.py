"""Sending e-mail (password-reset, first-password and address-confirmation links) through the SMTP
server of ``FORWARDAUTH_SMTP_URL``.

smtplib in a worker thread (``asyncio.to_thread``): a slow mail server holds a thread, never the
event loop. ``smtp://`` is plain (a relay on this host), ``smtp+starttls://`` upgrades with
STARTTLS, ``smtps://`` is TLS from the start; both TLS forms check the server's certificate. The
user name and password come percent-encoded in the URL and are never logged nor put in an error.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import unquote, urlsplit

from forwardauth.config import Settings

TIMEOUT = 10.0  # seconds for connecting and for each SMTP command
DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


class MailError(Exception):
    """The mail could not be handed to the SMTP server; the message names the server, never a secret."""


@dataclass(frozen=True, slots=True)
class _Server:
    scheme: str
    host: str
    port: int
    user: str | None
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> _Server:
        parts = urlsplit(url)  # checked by config.parse_smtp_url
        return cls(
            scheme=parts.scheme,
            host=parts.hostname or "localhost",
            port=parts.port or DEFAULT_PORTS.get(parts.scheme, 25),
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )

    def __repr__(self) -> str:  # no password in a traceback's locals or a log line
        return f"{self.scheme}://{self.host}:{self.port}"


class Mailer:
    """Sends plain-text mail from ``settings.smtp_from``; ``enabled`` only with an SMTP URL."""

    def __init__(self, settings: Settings, tls: ssl.SSLContext | None = None) -> None:
        self.sender = settings.smtp_from
        self._server = _Server.from_url(settings.smtp_url) if settings.smtp_url else None
        # The certificate check of smtps:// and STARTTLS (a test passes a context trusting its own CA).
        self._tls = tls or ssl.create_default_context()

    @property
    def enabled(self) -> bool:
        return self._server is not None

    def message(self, to: str, subject: str, text: str) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = to
        mail["Subject"] = subject
        mail["Date"] = formatdate(localtime=False, usegmt=True)
        mail["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or None)
        mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to it
        mail.set_content(text)
        return mail

    async def send(self, to: str, subject: str, text: str) -> None:
        """Hand one mail to the server (``MailError`` when it cannot be; nothing sent without a URL)."""
        if self._server is None:
            raise MailError("no mail server: FORWARDAUTH_SMTP_URL is not set")
        try:
            mail = self.message(to, subject, text)
        except ValueError as exc:  # a header that cannot be written (a line break in it...)
            raise MailError(f"the mail cannot be written: {exc}") from None
        await asyncio.to_thread(self._deliver, self._server, mail)

    def _deliver(self, server: _Server, mail: EmailMessage) -> None:
        try:
            smtp: smtplib.SMTP
            if server.scheme == "smtps":
                smtp = smtplib.SMTP_SSL(server.host, server.port, timeout=TIMEOUT, context=self._tls)
            else:
                smtp = smtplib.SMTP(server.host, server.port, timeout=TIMEOUT)
            with smtp:
                if server.scheme == "smtp+starttls":
                    smtp.starttls(context=self._tls)
                if server.user is not None:
                    smtp.login(server.user, server.password or "")
                smtp.send_message(mail)
        except smtplib.SMTPAuthenticationError as exc:
            raise MailError(f"{server!r} refused the user name or password ({exc.smtp_code})") from None
        except smtplib.SMTPResponseException as exc:
            raise MailError(f"{server!r} refused the mail: {exc.smtp_code} {_said(exc.smtp_error)}") from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            raise MailError(f"{server!r} refused the recipient ({', '.join(map(str, codes))})") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise MailError(f"{server!r}: {type(exc).__name__}: {exc}") from None


def _said(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())[:200]
