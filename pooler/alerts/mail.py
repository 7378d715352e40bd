"""One email attempt over SMTP (stdlib `smtplib`, in a worker thread, every socket
operation under a timeout and the whole attempt under the caller's deadline). No email is
sent when the instance has no SMTP host configured. The answer is the error class (None:
accepted by the server)."""

from __future__ import annotations

import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Final

import trio

SMTP_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class SmtpServer:
    host: str
    port: int
    sender: str
    username: str = ""
    password: str | None = None
    starttls: bool = True


def build_message(sender: str, to: str, subject: str, text: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content(text)
    return message


def _send(server: SmtpServer, message: EmailMessage, timeout_s: float) -> None:
    with smtplib.SMTP(server.host, server.port, timeout=timeout_s) as smtp:
        if server.starttls:
            smtp.starttls(context=ssl.create_default_context())
        if server.username:
            smtp.login(server.username, server.password or "")
        smtp.send_message(message)


def error_class(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return "smtp_auth"
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return "smtp_starttls_unsupported"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"smtp_{exc.smtp_code}"
    if isinstance(exc, smtplib.SMTPException):
        return "smtp"
    if isinstance(exc, ssl.SSLError):
        return "tls"
    if isinstance(exc, OSError):
        return "connect"
    return "error"


async def send_email(
    server: SmtpServer, to: str, subject: str, text: str, *, timeout_s: float = SMTP_TIMEOUT_S
) -> str | None:
    """Send one plain-text email; None when the server accepted it, else the error class.
    Past the deadline the thread is abandoned (its socket timeout ends it)."""
    message = build_message(server.sender, to, subject, text)
    with trio.move_on_after(timeout_s * 3):
        try:
            await trio.to_thread.run_sync(_send, server, message, timeout_s, abandon_on_cancel=True)
        except Exception as exc:
            return error_class(exc)
        return None
    return "timeout"
