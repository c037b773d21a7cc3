"""A local SMTP server that keeps each message as a `.eml` file: mail that goes nowhere.

`scripts/run` starts one in its data dir so the receipts a node mails can be
read (any mail client opens a `.eml` file); the tests read what nodes sent
from it. It accepts any sender and recipient, delivers nothing onwards, and
listens on 127.0.0.1 only. aiosmtpd serves it from a thread of its own.
"""

import itertools
import os
import tempfile
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from backend.embedded.processes import HOST

_counter = itertools.count(1)


class MailFolder:
    """aiosmtpd's handler: each message whole into `folder`, named by arrival."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        recipients = ", ".join(envelope.rcpt_tos)
        head = f"X-MailFrom: {envelope.mail_from}\r\nX-RcptTo: {recipients}\r\n".encode()
        name = f"{time.time_ns()}-{os.getpid()}-{next(_counter):06d}.eml"
        handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=".incoming-")
        with os.fdopen(handle, "wb") as out:
            out.write(head + content)
        os.replace(temporary, self.folder / name)
        return "250 Message accepted for delivery"


class MailSink:
    """The SMTP server on 127.0.0.1:`port`, writing into `folder` until stopped."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder.resolve()
        self.port = port
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://{HOST}:{self.port}"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        # decode_data=False keeps the message's bytes as sent (original_content).
        controller = Controller(MailFolder(self.folder), hostname=HOST, port=self.port)
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def messages(self) -> list[EmailMessage]:
        """Every message kept so far, oldest first."""
        return [read(path) for path in sorted(self.folder.glob("*.eml"))]


def read(path: Path) -> EmailMessage:
    return message_from_bytes(path.read_bytes(), policy=policy.default)
