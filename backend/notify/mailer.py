"""Mail over SMTP: one multipart/alternative message (text and HTML) per notification.

SMTP_URL says where: `smtp://host:port` (STARTTLS when the server offers it),
`smtps://host:port` (TLS from the start), with `user:password@` to log in. The
standard library's smtplib does the talking, in a worker thread so the event
loop never waits on a mail server.

The Message-ID is made from the event id: should a message ever go out twice
(a sender that died between its send and its record, see
`backend.notify.consumer`), mail clients show it once.
"""

import asyncio
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from urllib.parse import unquote, urlsplit
from uuid import UUID

from backend.notify.receipts import Receipt

TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    tls: bool  # TLS from the first byte (smtps)
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str) -> "SmtpServer":
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("SMTP_URL must look like smtp://host:port or smtps://host:port")
        tls = parts.scheme == "smtps"
        return cls(
            parts.hostname,
            parts.port or (465 if tls else 25),
            tls,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
        )


def message(receipt: Receipt, sender: str, recipient: str, event_id: UUID) -> EmailMessage:
    mail = EmailMessage()
    mail["Subject"] = receipt.subject
    mail["From"] = sender
    mail["To"] = recipient
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = f"<{event_id}@orderflow>"
    mail["OrderFlow-Event-Id"] = str(event_id)
    mail.set_content(receipt.text)
    mail.add_alternative(receipt.html, subtype="html")
    return mail


class Mailer:
    def __init__(self, server: SmtpServer, sender: str) -> None:
        self.server = server
        self.sender = sender

    async def send(self, mail: EmailMessage) -> None:
        """Raises OSError (smtplib.SMTPException among them) when the server refuses."""
        await asyncio.to_thread(self._send, mail)

    def _send(self, mail: EmailMessage) -> None:
        server = self.server
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if server.tls:
            client = smtplib.SMTP_SSL(
                server.host, server.port, timeout=TIMEOUT_SECONDS, context=context
            )
        else:
            client = smtplib.SMTP(server.host, server.port, timeout=TIMEOUT_SECONDS)
        with client:
            client.ehlo()
            if not server.tls and client.has_extn("starttls"):
                client.starttls(context=context)
                client.ehlo()
            if server.username is not None:
                client.login(server.username, server.password or "")
            client.send_message(mail)
