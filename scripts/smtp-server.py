#!/usr/bin/env python3
"""The SMTP server AutomateIQ's tests send mail to (started by scripts/services up smtp).

Runs on aiosmtpd 1.4.6 (scripts/services installs it into a venv and starts this file with
that venv's python). Behaviour:

* listens on --host/--port (127.0.0.1:2525) and offers STARTTLS with --cert/--key;
* AUTH PLAIN and LOGIN only after STARTTLS, and required before MAIL/RCPT/DATA; the one
  account is AIQ_SMTP_USER / AIQ_SMTP_PASSWORD from the environment (aiq /
  aiq-smtp-secret), --user/--password override; wrong credentials get 535;
* RCPT to any address at reject.invalid gets "550 5.1.1 mailbox unavailable", at
  tempfail.invalid "451 4.3.0 try again later"; every other address is accepted;
* each accepted message goes to --maildir as <time-ns>-<n>.eml, the bytes as received
  (after dot-unstuffing, CRLF line ends), beside <time-ns>-<n>.json with
  {"mail_from", "rcpt_tos", "auth_user"}. Both are written to a dot-file and renamed,
  the .json first, so a .eml that can be seen is complete and has its .json;
* logs to stderr; SIGTERM or SIGINT closes the listener and the open sessions, exit 0.
"""

import argparse
import asyncio
import hmac
import itertools
import json
import logging
import os
import signal
import ssl
import sys
import time
import weakref

from aiosmtpd import __version__ as AIOSMTPD_VERSION
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

log = logging.getLogger("aiq.smtp")

REJECT_DOMAIN = "reject.invalid"
TEMPFAIL_DOMAIN = "tempfail.invalid"


def domain_of(address):
    return address.rpartition("@")[2].lower()


class Authenticator:
    """aiosmtpd's `authenticator`: called as (server, session, envelope, mechanism,
    auth_data) with a LoginPassword of bytes for the built-in PLAIN and LOGIN."""

    def __init__(self, user, password):
        self.user = user.encode()
        self.password = password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        if (
            isinstance(auth_data, LoginPassword)
            and hmac.compare_digest(auth_data.login, self.user)
            and hmac.compare_digest(auth_data.password, self.password)
        ):
            # auth_data lands in session.auth_data: the user name, not the password.
            return AuthResult(success=True, auth_data=self.user.decode())
        login = auth_data.login.decode(errors="replace") if isinstance(auth_data, LoginPassword) else "?"
        log.info("%r AUTH %s failed for %r", session.peer, mechanism, login)
        # handled=False makes smtp_AUTH answer "535 5.7.8 Authentication credentials
        # invalid"; with the default handled=True it would send nothing at all.
        return AuthResult(success=False, handled=False)


class MaildirHandler:
    def __init__(self, maildir):
        self.maildir = maildir
        self.counter = itertools.count(1)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        domain = domain_of(address)
        if domain == REJECT_DOMAIN:
            return "550 5.1.1 mailbox unavailable"
        if domain == TEMPFAIL_DOMAIN:
            return "451 4.3.0 try again later"
        # A hook that answers itself must record the recipient itself too.
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    def _write(self, name, data):
        tmp = os.path.join(self.maildir, "." + name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(self.maildir, name))

    async def handle_DATA(self, server, session, envelope):
        stem = "%d-%d" % (time.time_ns(), next(self.counter))
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "auth_user": session.auth_data if session.authenticated else None,
        }
        try:
            self._write(stem + ".json", (json.dumps(meta, indent=2) + "\n").encode())
            self._write(stem + ".eml", envelope.original_content)
        except OSError:
            log.exception("cannot store message %s in %s", stem, self.maildir)
            return "451 4.3.0 cannot store the message"
        log.info(
            "%r stored %s.eml (%d bytes) from %s to %s",
            session.peer, stem, len(envelope.original_content), envelope.mail_from,
            ", ".join(envelope.rcpt_tos),
        )
        return "250 OK stored as " + stem


class DropLoginDataWarning(logging.Filter):
    # aiosmtpd 1.4.6's smtp_AUTH itself sets the deprecated Session.login_data, which
    # logs a warning on every successful AUTH.
    def filter(self, record):
        return "login_data is deprecated" not in record.getMessage()


async def serve(args, user, password):
    loop = asyncio.get_running_loop()
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.minimum_version = ssl.TLSVersion.TLSv1_2
    tls.load_cert_chain(args.cert, args.key)
    handler = MaildirHandler(args.maildir)
    authenticator = Authenticator(user, password)
    sessions = weakref.WeakSet()

    def new_session():
        smtp = SMTP(
            handler,
            # Without hostname aiosmtpd calls socket.getfqdn() for every connection.
            hostname="localhost",
            ident="AutomateIQ test SMTP (aiosmtpd %s)" % AIOSMTPD_VERSION,
            tls_context=tls,
            require_starttls=False,
            auth_required=True,
            auth_require_tls=True,
            authenticator=authenticator,
            enable_SMTPUTF8=True,
            loop=loop,
        )
        sessions.add(smtp)
        return smtp

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(new_session, host=args.host, port=args.port)
    log.info(
        "aiosmtpd %s listening on %s:%d (STARTTLS with %s; AUTH PLAIN/LOGIN as %r after TLS); mail to %s",
        AIOSMTPD_VERSION, args.host, args.port, args.cert, user, args.maildir,
    )
    await stop.wait()
    open_sessions = [smtp for smtp in sessions if smtp.transport is not None]
    log.info("signal received: closing the listener and %d open session(s)", len(open_sessions))
    server.close()
    for smtp in open_sessions:
        smtp.transport.close()
    await asyncio.wait_for(server.wait_closed(), 10)
    log.info("stopped")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("AIQ_SMTP_PORT", "2525")))
    p.add_argument("--cert", required=True, help="PEM certificate offered by STARTTLS")
    p.add_argument("--key", required=True, help="PEM private key of --cert")
    p.add_argument("--maildir", required=True, help="folder for the .eml and .json files")
    p.add_argument("--user", default=os.environ.get("AIQ_SMTP_USER", "aiq"))
    p.add_argument("--password", default=os.environ.get("AIQ_SMTP_PASSWORD", "aiq-smtp-secret"))
    args = p.parse_args()

    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("mail.log").addFilter(DropLoginDataWarning())
    if not args.user or not args.password:
        p.error("the user name and the password must not be empty")
    os.makedirs(args.maildir, exist_ok=True)
    asyncio.run(serve(args, args.user, args.password))


if __name__ == "__main__":
    main()
