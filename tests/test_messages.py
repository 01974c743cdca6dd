"""Status lines that say what went wrong and how to fix it (issue 7, "Polish").

The real command against the lab's Dovecot/Postfix, or against loopback fault
servers (tests/faultservers/) that answer like Courier or Cyrus.  Every case
asserts the whole first line and that nothing went to stderr.

1. non-ASCII server words stay readable (UTF-8, modified UTF-7 folder names);
2. a missing folder names the server's folder layout and, where one matches,
   the folder meant; the good path asks nothing extra;
3. a refused STARTTLS is told in the server's words (SMTP's: test_network_faults);
4. the server's closing full stop does not double the punctuation;
5. certificate failures hint at the fix (--ca-file; the names a certificate is for).
"""

import re

import pytest

from tests import faultservers as fs
from tests.test_network_faults import (
    PERF_SENT,
    assert_line,
    checker,
    imap_at,
    imap_failure,
    next_run_collects,
    smtp_at,
    smtp_failure,
)

COURIER_FOLDERS = ["INBOX", "INBOX.Drafts", "INBOX.Sent", "INBOX.Trash", "INBOX.Entw&APw-rfe"]
UNTRUSTED = (r"certificate verify failed: unable to get local issuer certificate \(a private CA or a "
             r"self-signed certificate\? trust it with --ca-file, or skip verification with --insecure\)")


COURIER_LAYOUT = r'the server\'s personal namespace is "INBOX\." with separator "\."'


def quiet(r):
    assert r.stderr == "", r
    return r


def courier(**kwargs):
    """A fault server with Courier's folder layout: everything below "INBOX."."""
    kwargs.setdefault("capabilities", "NAMESPACE")
    return fs.IMAPScript(folders=COURIER_FOLDERS, **kwargs)


def watching(lab, tmp_path, script, folder):
    """A first run whose IMAP server is *script* (plain IMAP on loopback), watching *folder*
    (not looking for a Junk folder: tests/test_junk.py does)."""
    check = checker(lab, tmp_path)
    with fs.FaultServer(script) as srv:
        r = quiet(check(*imap_at(srv.port, "none"), "--imap-folder", folder, "-t", "6", "--no-junk"))
    return r, srv


def not_found(folder, words, layout=COURIER_LAYOUT, meant=None):
    """The line of a first run whose folder was not found (all but *layout* taken literally)."""
    text = r'IMAP select failed: folder "%s" not found \(server: %s\)' % (re.escape(folder), re.escape(words))
    text += "; " + layout if layout else ""
    return imap_failure(text + (": try --imap-folder " + re.escape(meant) if meant else ""))


# == 1. non-ASCII words ==================================================================

def test_a_missing_folder_with_umlauts_is_named_as_dovecot_says_it(lab, tmp_path):
    """Dovecot answers in UTF-8 (imapclient used to drop those bytes and warn on stderr)."""
    check = checker(lab, tmp_path)
    r = quiet(check("--imap-folder", "Entwürfe"))
    assert_line(r, not_found("Entwürfe", "Mailbox doesn't exist: Entwürfe",
                             r'the server\'s folders have no prefix, separator "/"'))


def test_modified_utf7_in_the_server_words_is_decoded(lab, tmp_path):
    r, srv = watching(lab, tmp_path, courier(missing='{tag} NO Mailbox "{name}" does not exist'),
                      "INBOX.Entwürfe.alt")
    assert_line(r, not_found("INBOX.Entwürfe.alt", 'Mailbox "INBOX.Entwürfe.alt" does not exist'))
    assert 'SELECT "INBOX.Entw&APw-rfe.alt"' in " ".join(srv.received)


def test_utf8_server_words_are_kept(lab, tmp_path):
    r, _ = watching(lab, tmp_path, courier(missing="{tag} NO Postfach „{name}“ gibt es nicht."), "Ablage")
    assert_line(r, not_found("Ablage", "Postfach „Ablage“ gibt es nicht"))


# == 2. a missing folder ===================================================================

@pytest.mark.parametrize("asked, meant", [
    ("Drafts", "INBOX.Drafts"),          # the personal namespace left out
    ("drafts", "INBOX.Drafts"),          # and the case
    ("INBOX/Sent", "INBOX.Sent"),        # the other usual separator
    ("Entwürfe", "INBOX.Entwürfe"),      # a name in modified UTF-7 on the wire
])
def test_courier_layout_suggests_the_folder_meant(lab, tmp_path, asked, meant):
    r, _ = watching(lab, tmp_path, courier(), asked)
    assert_line(r, not_found(asked, "Mailbox does not exist", meant=meant))


def test_courier_layout_without_a_match(lab, tmp_path):
    script = courier()
    r, _ = watching(lab, tmp_path, script, "Probes")
    assert_line(r, not_found("Probes", "Mailbox does not exist"))
    # after the failed SELECT: one NAMESPACE, one LIST per level looked at, then goodbye
    assert script.commands == ["CAPABILITY", "LOGIN", "CAPABILITY", "SELECT", "NAMESPACE", "LIST",
                               "LIST", "LOGOUT"], script.commands


def test_without_namespace_the_separator_comes_from_list(lab, tmp_path):
    script = courier(capabilities="")
    r, _ = watching(lab, tmp_path, script, "Trash")
    assert_line(r, not_found("Trash", "Mailbox does not exist", r'the server\'s hierarchy separator is "\."',
                             meant="INBOX.Trash"))
    assert "NAMESPACE" not in script.commands


def test_a_folder_that_exists_but_does_not_open(lab, tmp_path):
    r, _ = watching(lab, tmp_path, courier(replies={"SELECT": "{tag} NO Permission denied."}), "INBOX.Sent")
    assert_line(r, imap_failure(
        r'IMAP select failed: folder "INBOX\.Sent" exists but does not open \(server: Permission denied\)'))


def test_courier_folder_given_right_costs_nothing_extra(lab, tmp_path):
    script = courier()
    r, _ = watching(lab, tmp_path, script, "INBOX.Drafts")
    assert_line(r, r"MAIL_ROUNDTRIP OK - first probe sent, 1 in flight \| " + PERF_SENT.replace("junk=0;;;0 ", ""),
                rc=0)
    assert script.commands[:5] == ["CAPABILITY", "LOGIN", "CAPABILITY", "SELECT", "UID SEARCH"], script.commands
    assert "NAMESPACE" not in script.commands and "LIST" not in script.commands, script.commands


def test_dovecot_folder_in_another_case(lab, tmp_path):
    check = checker(lab, tmp_path)
    r = quiet(check("--imap-folder", "junk"))
    assert_line(r, not_found("junk", "Mailbox doesn't exist: junk",
                             r'the server\'s folders have no prefix, separator "/"', meant="Junk"))
    # the folder meant works, and the good path asks for nothing but the folder
    r = quiet(check("--imap-folder", "Junk", "-vvv", "--no-junk"))
    assert r.rc == 0, r
    assert re.search(r'(?m)^IMAP C: \S+ SELECT "Junk"$', r.stdout), r
    assert not re.search(r"(?m)^IMAP C: \S+ (NAMESPACE|LIST)\b", r.stdout), r


# == 3. STARTTLS refused ===================================================================

@pytest.mark.parametrize("reply, words", [
    ("{tag} NO STARTTLS failed: no certificate configured", "STARTTLS failed: no certificate configured"),
    ("{tag} BAD TLS support is not enabled", "TLS support is not enabled"),
])
def test_imap_starttls_refused_in_the_servers_words(lab, tmp_path, reply, words):
    check = checker(lab, tmp_path)
    script = fs.IMAPScript(starttls=fs.server_context(lab.cert_file, lab.key_file),
                           replies={"STARTTLS": reply})
    with fs.FaultServer(script) as srv:
        r = quiet(check(*imap_at(srv.port, "starttls"), "-t", "6"))
    assert_line(r, imap_failure("IMAP TLS failed: server refused STARTTLS: " + words), budget=6)
    assert "LOGIN" not in script.commands, script.commands
    next_run_collects(lab, check)


# == 4. punctuation ========================================================================

def test_the_servers_full_stop_does_not_double_the_punctuation(lab, tmp_path):
    check = checker(lab, tmp_path)
    r = quiet(check(env={"CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD": "not-the-password"}))
    assert_line(r, imap_failure(r"IMAP login failed: \[AUTHENTICATIONFAILED\] Authentication failed"))
    # a good login clears Dovecot's penalty for this address before the next tests' tight budgets
    next_run_collects(lab, check)


def test_smtp_words_lose_their_full_stop_too(lab, tmp_path):
    check = checker(lab, tmp_path)
    script = fs.SMTPScript({"MAIL": "451 4.3.0 Try again later."})
    with fs.FaultServer(script) as srv:
        r = quiet(check(*smtp_at(srv.port)))
    assert_line(r, smtp_failure("SMTP send failed: temporary rejection at MAIL: 451 4.3.0 Try again later"))


# == 5. certificates =======================================================================

def test_an_untrusted_ca_names_the_option_on_both_sides(lab, tmp_path):
    check = checker(lab, tmp_path)
    i = check.args.index("--ca-file")
    del check.args[i:i + 2]
    r = quiet(check("-t", "6"))
    assert_line(r, r"MAIL_ROUNDTRIP CRITICAL - IMAP TLS failed: %s, SMTP TLS failed: %s, no probe out yet, "
                   r"0 in flight \| lost=0;;;0 oldest_pending=0\.0s;120;600;0 pending=0;;;0"
                % (UNTRUSTED, UNTRUSTED), budget=6)


@pytest.mark.parametrize("side", ["imap", "smtp"])
def test_a_certificate_for_several_other_names_lists_them(lab, tmp_path, side):
    check = checker(lab, tmp_path)
    pair = lab.make_cert("mail.example.org", ["DNS:mail.example.org", "DNS:mx.example.org"])
    ctx = fs.server_context(*pair)
    words = (r"certificate verify failed: Hostname mismatch, certificate is not valid for 'localhost' "
             r"\(the certificate is for mail\.example\.org, mx\.example\.org\)")
    if side == "imap":
        with fs.FaultServer(fs.IMAPScript(), tls=ctx) as srv:
            r = quiet(check(*imap_at(srv.port, "tls", "localhost"), "-t", "6"))
        assert_line(r, imap_failure("IMAP TLS failed: " + words), budget=6)
    else:
        with fs.FaultServer(fs.SMTPScript(), tls=ctx) as srv:
            r = quiet(check(*smtp_at(srv.port, "tls", "localhost"), "-t", "6"))
        assert_line(r, smtp_failure("SMTP TLS failed: " + words), budget=6)
    assert srv.accepted == 2  # the second connection read the certificate's names


# == servers that keep removed mail ======================================================

def test_a_server_that_moves_expunged_mail_to_trash_is_named_in_verbose_output(lab, tmp_path):
    """Courier with IMAP_MOVE_EXPUNGE_TO_TRASH announces XMAGICTRASH: -v says where probes go."""
    check = checker(lab, tmp_path)
    with fs.FaultServer(courier(capabilities="NAMESPACE UIDPLUS XMAGICTRASH")) as srv:
        r = quiet(check(*imap_at(srv.port, "none"), "-v", "-t", "6"))
    assert r.rc == 0 and r.line.startswith("MAIL_ROUNDTRIP OK - first probe sent, 1 in flight"), r
    assert ("the server moves expunged mail to Trash (Courier's XMAGICTRASH): removed probes collect "
            "there until it empties Trash") in r.stdout.splitlines(), r
    with fs.FaultServer(courier(capabilities="NAMESPACE UIDPLUS")) as srv:
        r = quiet(check(*imap_at(srv.port, "none"), "-v", "-t", "6"))
    assert "XMAGICTRASH" not in r.stdout, r
