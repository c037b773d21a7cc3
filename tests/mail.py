"""The SMTP sink for tests: what nodes mail lands as `.eml` files in a test's folder."""

from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path

from backend.embedded import free_port
from backend.embedded.smtp import MailSink


@contextmanager
def mail_sink(folder: Path) -> Iterator[MailSink]:
    sink = MailSink(folder, free_port())
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


def mails_for(sink: MailSink, event_id: str) -> list[EmailMessage]:
    return [m for m in sink.messages() if m["OrderFlow-Event-Id"] == event_id]


def text_of(mail: EmailMessage) -> str:
    body = mail.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def html_of(mail: EmailMessage) -> str:
    body = mail.get_body(("html",))
    assert body is not None
    return str(body.get_content())
