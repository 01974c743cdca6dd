"""A run loads only what it uses: parsing the options of an IMAP run with a
password loads no POP3, no Microsoft Graph, no OAuth2 and its HTTP client, no protocol trace
(that is -vvv's), nothing of the reflector and not the email package's header
parser (email.policy: a usual probe is written without it).  What a run costs is measured
by benchmarks/run_cost.py; this guards the imports it depends on."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WATCHED = ("poplib", "urllib.request", "http.client", "check_mail_roundtrip.pop3", "check_mail_roundtrip.oauth2",
           "check_mail_roundtrip.trace", "check_mail_roundtrip.reflector", "check_mail_roundtrip.reflector_rules",
           "check_mail_roundtrip.reflector_settings", "email.policy", "check_mail_roundtrip.graph",
           "check_mail_roundtrip.graph_http", "check_mail_roundtrip.graph_send", "check_mail_roundtrip.hops",
           "check_mail_roundtrip.auth_results")
PARSE = """
import json, sys
from check_mail_roundtrip import cli
settings = cli.settings_from(cli.parser().parse_args(sys.argv[1:]))
print(json.dumps({"collect_by": settings.collect_by, "one_tls_context": settings.smtp.ssl_context is settings.imap.ssl_context,
                  "loaded": [m for m in %r if m in sys.modules]}))
""" % (WATCHED,)


def parse(tmp_path, *options):
    """The settings' collecting side, whether both sides share one TLS context, and the
    WATCHED modules loaded, after a fresh Python parsed *options* (an IMAP password in the
    environment) as the check does."""
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "lib"), CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD="s3cret-pw")
    p = subprocess.run([sys.executable, "-c", PARSE, "-H", "mail.example.org", "--from", "monitor@example.org",
                        "--state-dir", str(tmp_path), *options],
                       capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert p.returncode == 0, p
    return json.loads(p.stdout)


def test_an_imap_password_run_loads_no_other_transport_no_oauth2_no_trace_nor_the_reflector(tmp_path):
    assert parse(tmp_path) == {"collect_by": "imap", "one_tls_context": True, "loaded": []}
    assert parse(tmp_path, "-vv") == {"collect_by": "imap", "one_tls_context": True, "loaded": []}


def test_oauth2_is_loaded_by_a_run_that_signs_in_with_it_and_its_http_client_only_for_a_token_endpoint(tmp_path):
    token = tmp_path / "token"
    token.write_text("an-access-token\n")
    token.chmod(0o600)
    assert parse(tmp_path, "--imap-auth", "oauth2", "--oauth2-token-file", str(token)) == {
        "collect_by": "imap", "one_tls_context": True, "loaded": ["check_mail_roundtrip.oauth2"]}


def test_the_protocols_load_neither_the_trace_nor_oauth2_until_a_run_asks_for_them():
    code = ("import sys; import check_mail_roundtrip.imap, check_mail_roundtrip.smtp, check_mail_roundtrip.pop3; "
            "print([m for m in ('check_mail_roundtrip.trace', 'check_mail_roundtrip.oauth2') if m in sys.modules])")
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "lib"))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert (p.returncode, p.stdout) == (0, "[]\n"), p


def loaded_by(result):
    """The modules a check run imported, from Python's import-time report on its stderr."""
    return {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}


def test_a_real_run_over_tls_loads_no_other_transport_no_oauth2_no_trace_no_reflector_and_no_idna_codec(lab, tmp_path):
    """IMAPS and SMTP with STARTTLS to the lab: the certificates are checked against the
    host name without the IDNA codec (an ASCII name needs none) and nothing unused is loaded."""
    from tests.checkrun import Checker

    check = Checker(lab, tmp_path)
    first = check(env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert first.line.startswith("MAIL_ROUNDTRIP OK - first probe sent"), first
    second = check.until(lambda r: "round trip" in r.line, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert second.status == "OK" and "round trip" in second.line, second
    for result in (first, second):
        loaded = loaded_by(result)
        assert "check_mail_roundtrip.imap" in loaded and "smtplib" in loaded and "ssl" in loaded
        assert sorted(loaded & set(WATCHED + ("encodings.idna", "stringprep"))) == []


def test_the_entry_point_loads_no_typing_before_it_turns_the_garbage_collector_off():
    """typing (a large module) loads with the rest, after entry.check() turned the collector
    off: loaded before, it set off collections of its own in every run."""
    code = "import sys, check_mail_roundtrip.entry; print('typing' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "lib"))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert (p.returncode, p.stdout) == (0, "False\n"), p
