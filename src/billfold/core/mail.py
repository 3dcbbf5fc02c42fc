"""Outgoing mail: through the SMTP server in BILLFOLD_SMTP_URL, or, with none, written as
an `.eml` file under BILLFOLD_HOME/mail/ so that a local install works offline."""

from __future__ import annotations

import smtplib
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from urllib.parse import unquote, urlsplit

import structlog

from billfold.config import Settings

log = structlog.get_logger(__name__)


def send(
    settings: Settings,
    to: str,
    subject: str,
    text: str,
    *,
    attachments: Sequence[tuple[str, str, bytes]] = (),
) -> None:
    """Sends a plain-text mail; `attachments` are (file name, MIME type, content)."""
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="billfold")
    message.set_content(text)
    for name, kind, content in attachments:
        main, _, sub = kind.partition("/")
        message.add_attachment(content, maintype=main, subtype=sub, filename=name)
    if settings.smtp_url is None:
        folder = Path(settings.home) / "mail"
        folder.mkdir(parents=True, exist_ok=True)
        name = message["Message-ID"].strip("<>").replace("@", "_")
        (folder / f"{name}.eml").write_bytes(bytes(message))
        return
    url = urlsplit(settings.smtp_url)
    secure = url.scheme == "smtps"
    port = url.port or (465 if secure else 25)
    smtp_class = smtplib.SMTP_SSL if secure else smtplib.SMTP
    with smtp_class(url.hostname or "localhost", port, timeout=10) as smtp:
        if url.scheme == "smtp+starttls":
            smtp.starttls()
        if url.username:
            smtp.login(unquote(url.username), unquote(url.password or ""))
        smtp.send_message(message)
    log.info("mail_sent", subject=subject)
