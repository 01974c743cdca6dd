"""What every part of the mail lab shares: constants, LabError, the layout.

The layout is the lab's directory with the paths inside it, its ports and
its users; the components (tls, postfix, dovecot, faults, tokens) all read the one
Layout object, so a change (the directory made by start(), users added by
add_user()) is seen by each of them at once.

    tls/        CA, server certificate, extra certificates from make_cert()
    postfix/    main.cf, master.cf, header_checks, vmailbox
    spool/      Postfix queue_directory; postfix-data/ its data_directory
    dovecot/    dovecot.conf, listeners.conf, users, oauth2.conf.ext; run/ (base_dir), state/
    sieve/      global sieve_before scripts (echo address, junk fault)
    mail/       Maildirs, one per virtual user (owned by the "vmail" user)
    log/        postfix.log, dovecot.log, releaser.log, tokenservice.log
    run/        releaser.pid, tokenservice.pid
    faults.json the faults that are set (shared by every process using the lab)
    lab.json    host, ports, CA, users, dir, oauth2 (written by start())

The mail ports are `ports` (PORT_NAMES); the OAuth2 token service's port is
`oauth2_port`, apart from them.
"""

import os

HOST = "127.0.0.1"
# IMAP here answers like a server without UIDPLUS (same mailboxes, same ports)
NO_UIDPLUS_HOST = "127.0.0.2"
# IMAP here answers like a plainer server: neither IDLE nor SPECIAL-USE (same mailboxes, same ports)
PLAIN_HOST = "127.0.0.3"
# IPv6 loopback: the lab's SMTP port, IMAP and POP3 listen here too, where the machine has it
IPV6_HOST = "::1"
DOMAIN = "lab.test"
# Postfix's local(8) domain: aliases that pipe into commands (Postfix.alias_command)
LOCAL_DOMAIN = "local.lab.test"
PORT_NAMES = ("smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s")
OAUTH2_PORT_NAME = "oauth2"
USER_NAMES = ("monitor", "other", "echo")
ECHO_USER = "echo@" + DOMAIN
VMAIL_USER = "vmail"
DEFAULT_DIR = "/tmp/check_mail_roundtrip-lab"


def ipv6_loopback():
    """Can this machine listen on ::1?"""
    import socket
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind((IPV6_HOST, 0))
        return True
    except OSError:
        return False


class LabError(RuntimeError):
    """The lab could not do what was asked; the message says why."""


class Layout:
    """The lab directory and the files in it; ports; users (address -> password);
    oauth2_port (the token service's).

    Before the directory is known (dir None) the paths are relative ones,
    as MailLab always had them.
    """

    PATHS = {
        "ca_file": ("tls", "ca.pem"),
        "ca_key_file": ("tls", "ca.key"),
        "cert_file": ("tls", "server.pem"),
        "key_file": ("tls", "server.key"),
        "postfix_dir": ("postfix",),
        "queue_dir": ("spool",),
        "dovecot_conf": ("dovecot", "dovecot.conf"),
        "oauth2_conf": ("dovecot", "oauth2.conf.ext"),
        "dovecot_run": ("dovecot", "run"),
        "postfix_log": ("log", "postfix.log"),
        "dovecot_log": ("log", "dovecot.log"),
        "tokenservice_log": ("log", "tokenservice.log"),
        "tokenservice_pid": ("run", "tokenservice.pid"),
        "mail_dir": ("mail",),
        "faults_file": ("faults.json",),
        "json_file": ("lab.json",),
    }

    def __init__(self, dir=None, ports=None, users=None, oauth2_port=None):
        self.dir = os.path.abspath(dir) if dir else None
        self.ports = dict(ports or {})
        self.users = dict(users or {})
        self.oauth2_port = oauth2_port

    def p(self, *parts):
        """A path inside the lab directory."""
        return os.path.join(self.dir, *parts)

    def __getattr__(self, name):
        try:
            parts = Layout.PATHS[name]
        except KeyError:
            raise AttributeError(name) from None
        return os.path.join(self.dir or "", *parts)
