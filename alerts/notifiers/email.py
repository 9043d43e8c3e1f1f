"""E-mail notifier: one plain-text message per notice over SMTP (STARTTLS by default).

smtplib runs in a worker thread with the notifier's timeout on every socket operation.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from expressway_certd.alerts.notify import Notice, NotifyError
from expressway_certd.monitor.config_notify import EmailConfig
from expressway_certd.monitor.errors import ConfigError

SUBJECT_MAX = 200


def message(config: EmailConfig, notice: Notice) -> EmailMessage:
    msg = EmailMessage()
    subject = f"[expressway-certd] {notice.title()}"
    msg["Subject"] = subject if len(subject) <= SUBJECT_MAX else subject[: SUBJECT_MAX - 3] + "..."
    msg["From"] = config.sender
    msg["To"] = ", ".join(config.to)
    msg["Date"] = format_datetime(notice.event.time)
    msg["Message-ID"] = make_msgid(domain=config.sender.rpartition("@")[2])
    msg.set_content(notice.text() + "\n\n-- \nexpressway-certd\n")
    return msg


class EmailNotifier:
    blind_resolve = False

    def __init__(self, config: EmailConfig) -> None:
        self.config = config
        self.name = config.name
        self.kind = config.kind
        self.routing = config.routing

    def _send_blocking(self, msg: EmailMessage, password: str | None) -> None:
        c = self.config
        timeout = self.routing.timeout.total_seconds()
        with smtplib.SMTP(c.host, c.port, timeout=timeout) as smtp:
            if c.starttls:
                context = ssl.create_default_context(
                    cafile=str(c.trust_anchor) if c.trust_anchor else None
                )
                smtp.starttls(context=context)
            if c.username is not None and password is not None:
                smtp.login(c.username, password)
            smtp.send_message(msg)

    async def send(self, notice: Notice) -> None:
        c = self.config
        try:
            password = c.password.reveal() if c.password is not None else None
        except ConfigError as exc:
            raise NotifyError(f"{self.name}: {exc}", retryable=False) from None
        msg = message(c, notice)
        where = f"{c.host}:{c.port}"
        try:
            await asyncio.to_thread(self._send_blocking, msg, password)
        except smtplib.SMTPNotSupportedError:
            raise NotifyError(
                f"{self.name}: {where} does not offer STARTTLS; use a server that does "
                "or set starttls = false for a trusted relay",
                retryable=False,
            ) from None
        except smtplib.SMTPAuthenticationError as exc:
            raise NotifyError(
                f"{self.name}: {where} refused the login of {c.username!r} "
                f"({exc.smtp_code}); check username and password",
                retryable=False,
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            refused = ", ".join(sorted(exc.recipients))
            raise NotifyError(
                f"{self.name}: {where} refused the recipients {refused}", retryable=False
            ) from None
        except smtplib.SMTPResponseException as exc:
            text = (
                exc.smtp_error.decode("utf-8", "replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            raise NotifyError(
                f"{self.name}: {where} answered {exc.smtp_code} {text}",
                retryable=exc.smtp_code < 500,
            ) from None
        except ssl.SSLError as exc:
            raise NotifyError(
                f"{self.name}: TLS with {where} failed ({exc.reason}); set trust_anchor to the "
                "CA of the mail server's certificate",
                retryable=False,
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise NotifyError(f"{self.name}: cannot send through {where}: {exc}") from None

    async def aclose(self) -> None:
        return None
