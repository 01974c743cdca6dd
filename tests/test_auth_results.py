"""Authentication-Results read and trusted (lib/check_mail_roundtrip/auth_results.py): pure, no lab.

The fields as OpenDKIM, OpenDMARC and policyd-spf write them, RFC 8601's forms (version,
"none", comments, quoted strings), a field without authserv-id as Exchange Online writes it;
which fields count (the trusted host's, above the Received field of the hop before it), and
hostile input: never a crash, bounded time.
"""

import time

from hypothesis import given, settings, strategies as st

from check_mail_roundtrip.auth_results import MAX_REASON, Result, parse, verdicts

DATE = "; Sun, 06 Dec 2026 19:36:04 +0000"
LMTP = ("received", "from mail.lab.test by mail.lab.test with LMTP id B5md" + DATE)
POSTFIX = ("received", "from mx1.lab.test (unknown [127.0.0.1]) by mail.lab.test (Postfix) with ESMTPS id 0A" + DATE)
RELAY = ("received", "from probe.example (unknown [127.0.0.1]) by mx1.lab.test (Postfix) with ESMTP id 1B" + DATE)
DMARC = ("authentication-results", "mail.lab.test; dmarc=pass (p=reject dis=none) header.from=lab.test")
DKIM = ("authentication-results", "mail.lab.test;\r\n\tdkim=pass (2048-bit key) header.d=lab.test "
        "header.i=@lab.test header.a=rsa-sha256 header.s=lab header.b=Pvx0Skm8;\r\n\tdkim-atps=neutral")
SPF = ("authentication-results", "mail.lab.test; spf=pass (sender SPF authorized) smtp.mailfrom=lab.test "
       "(client-ip=127.0.0.1; helo=mx1.lab.test; envelope-from=monitor@lab.test; receiver=lab.test)")


def ar(value):
    return ("authentication-results", value)


def test_the_fields_of_opendkim_opendmarc_and_policyd_spf_are_read():
    assert parse(DKIM[1]).results == (Result("dkim", "pass", "2048-bit key"), Result("dkim-atps", "neutral"))
    assert parse(SPF[1]).results == (Result("spf", "pass", "sender SPF authorized"),)
    assert parse(DMARC[1]).authserv_id == "mail.lab.test"
    failed = parse('mail.lab.test; dkim=fail reason="signature verification failed" header.d=lab.test')
    assert failed.results == (Result("dkim", "fail", "signature verification failed"),)


def test_rfc_8601_forms_version_none_comments_quoted_strings_and_no_authserv_id():
    versioned = parse('"Example.COM." (a comment) 1 (more); spf = softfail (relayed) smtp.mailfrom="a;b"@x')
    assert (versioned.authserv_id, versioned.version, versioned.results) == (
        "example.com", 1, (Result("spf", "softfail", "relayed"),))
    assert parse("example.org; none").results == ()
    assert parse("example.org; dkim/1=pass; x").results == (Result("dkim", "pass"),)
    exchange = parse("spf=pass (sender IP is 192.0.2.1) smtp.mailfrom=example.com; dkim=none (message not "
                     "signed) header.d=none;dmarc=none action=none header.from=example.com;compauth=pass reason=100")
    assert exchange.authserv_id == "" and [r.method for r in exchange.results] == ["spf", "dkim", "dmarc", "compauth"]


def test_the_labs_verdicts_from_the_delivering_host_read_as_the_v_line_says_them():
    v = verdicts([LMTP, POSTFIX, DMARC, DKIM, SPF, RELAY])
    assert v.line() == "auth: spf=pass dkim=pass dmarc=pass (by mail.lab.test)" and v.bad() == []


def test_a_failing_verdict_is_bad_with_its_reason_and_a_pass_among_several_signatures_wins():
    v = verdicts([LMTP, POSTFIX, DMARC, ar('mail.lab.test; dkim=fail reason="signature verification failed"'),
                  ar("mail.lab.test; spf=softfail; spf=pass"), RELAY])
    assert v.line() == "auth: spf=pass dkim=fail (signature verification failed) dmarc=pass (by mail.lab.test)"
    assert v.bad() == [Result("dkim", "fail", "signature verification failed")]
    assert verdicts([POSTFIX, ar("mail.lab.test; spf=none; dmarc=fail")]).line() == \
        "auth: spf=none dmarc=fail (by mail.lab.test)"


def test_forged_fields_from_before_the_trusted_host_are_ignored():
    forged = ar("mail.lab.test; spf=pass; dkim=pass; dmarc=pass")
    v = verdicts([LMTP, POSTFIX, ar("mail.lab.test; dkim=fail"), RELAY, forged])
    assert v.line() == "auth: dkim=fail (by mail.lab.test); 1 Authentication-Results with its name from before it ignored"
    # only forged ones: nothing is trusted
    v = verdicts([LMTP, POSTFIX, RELAY, forged, ("received", "from a by b" + DATE)])
    assert v.line() == "auth: no Authentication-Results by mail.lab.test (1 with its name from before it ignored)"
    assert v.bad() == []
    # another host's name counts for nothing
    assert verdicts([LMTP, POSTFIX, ar("mx.elsewhere.example; dkim=pass")]).line() == \
        "auth: no Authentication-Results by mail.lab.test"


def test_the_trusted_host_may_be_named_and_must_have_stamped_the_mail():
    gmail = [("received", "by 2002:a05:6a10:a0d1:b0:4d5 with SMTP id x" + DATE),
             ("received", "from relay.example (relay.example. [192.0.2.7]) by mx.google.com with ESMTPS id y" + DATE),
             ("received-spf", "ignored"), ar("mx.google.com; dkim=pass header.i=@example.org; spf=pass; dmarc=pass"),
             ("received", "from client by relay.example" + DATE), ar("mx.google.com; dkim=fail")]
    assert verdicts(gmail, "MX.Google.com.").line() == \
        "auth: spf=pass dkim=pass dmarc=pass (by mx.google.com); 1 Authentication-Results with its name from before it ignored"
    assert verdicts([LMTP, DKIM], "mx.other.example").line() == (
        "auth: no Received field by mx.other.example: its Authentication-Results cannot be told from forged ones")
    assert verdicts([DKIM]).line() == "auth: no Received field names the server that delivered the probe"


def test_reasons_are_shown_safely_and_briefly():
    (result,) = parse('h; dkim=fail reason="a|b\x1b[31m' + "x" * 500 + '"').results
    assert "|" not in result.reason and "\x1b" not in result.reason and len(result.reason) == MAX_REASON


def test_hostile_fields_cost_little():
    values = ["h; " + "dkim=pass; " * 20000, "h; (" * 5000, 'h; dkim=fail reason="' + "\\" * 9000,
              ";" * 50000, "h " + "=" * 50000]
    for value in values:
        started = time.monotonic()
        parse(value)
        assert time.monotonic() - started < 0.5
    started = time.monotonic()
    verdicts([LMTP, POSTFIX] + [ar("mail.lab.test; dkim=pass")] * 5000 + [RELAY] * 5000)
    assert time.monotonic() - started < 2.0


field_value = st.one_of(st.text(max_size=200), st.builds(
    lambda host, method, result, rest: "%s; %s=%s %s" % (host, method, result, rest),
    st.sampled_from(["mail.lab.test", "other", '"q"', ""]), st.sampled_from(["spf", "dkim", "dmarc", "x"]),
    st.sampled_from(["pass", "fail", "softfail", "none", "neutral"]), st.text(max_size=40)))
fields = st.lists(st.tuples(st.sampled_from(["received", "authentication-results"]),
                            st.one_of(field_value, st.sampled_from([LMTP[1], POSTFIX[1], RELAY[1]]))), max_size=30)


@settings(max_examples=300, deadline=None)
@given(fields, st.one_of(st.none(), st.sampled_from(["mail.lab.test", "mx1.lab.test", "x"])))
def test_any_fields_give_verdicts_of_the_trusted_host_only_never_raising(trace, host):
    v = verdicts(trace, host)
    line = v.line()
    assert line.startswith("auth: ") and "\n" not in line and "|" not in line
    assert all(r.result in ("fail", "softfail", "none") for r in v.bad())
    if v.results:
        assert v.trusted_fields and not v.problem
