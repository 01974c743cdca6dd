"""The Received chain read as hops (lib/check_mail_roundtrip/hops.py): pure, no lab.

Real fields as Postfix and Dovecot write them in the project's lab, the forms other servers
write (Exim, Exchange, sendmail), then hostile input: hundreds of fields, garbage dates,
folding, encoded words, unbalanced comments. Never a crash, never a negative hop, bounded time.
"""

import email.utils
import time

from hypothesis import given, settings, strategies as st

from check_mail_roundtrip.hops import MAX_NAME, MAX_RECEIVED, MAX_SHOWN, date_of, hops, stamp

DAY = "Sun,  6 Dec 2026 19:36:%02d +0000 (UTC)"
T0: float = date_of("Sun, 6 Dec 2026 19:36:00 +0000") or 0.0

LMTP = ("from mail.lab.test\r\n\tby mail.lab.test with LMTP\r\n\tid B5mdASS5FWvEDgAAg+zDdQ\r\n"
        "\t(envelope-from <monitor@lab.test>)\r\n\tfor <test@lab.test>; Sun, 06 Dec 2026 19:36:%02d +0000")
POSTFIX_TLS = ("from mx1.lab.test (unknown [127.0.0.1])\r\n"
               "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\r\n"
               "\t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)\r\n"
               "\t(No client certificate requested)\r\n"
               "\tby mail.lab.test (Postfix) with ESMTPS id 029B620C034\r\n"
               "\tfor <test@lab.test>; " + DAY)
POSTFIX_PLAIN = ("from probe-client.example (unknown [127.0.0.1])\r\n\tby mx1.lab.test (Postfix) with ESMTP id "
                 "4A1B2C\r\n\tfor <test@lab.test>; " + DAY)


def chain(*seconds, sent=0.4, collected=60.0):
    """The lab's three hops (newest first as in the mail), stamped at T0 + *seconds* (oldest first)."""
    first, relay, final = seconds
    return hops([LMTP % final, POSTFIX_TLS % relay, POSTFIX_PLAIN % first], T0 + sent, T0 + collected)


def test_the_labs_chain_reads_oldest_first_with_protocol_tls_and_the_time_of_each_hop():
    route = chain(1, 26, 26)
    assert route.lines() == [
        "hop 1: probe-client.example [127.0.0.1] -> mx1.lab.test (with ESMTP, TLS no) +0.6s",
        "hop 2: mx1.lab.test [127.0.0.1] -> mail.lab.test (with ESMTPS, TLS yes) +25.0s",
        "hop 3: mail.lab.test -> mail.lab.test (with LMTP, TLS no) +0.0s",
    ]
    slowest = route.slowest()
    assert (slowest.number, slowest.seconds, slowest.at) == (2, 25.0, "mx1.lab.test")  # held in mx1's queue


def test_hop_one_is_measured_from_the_send_time_and_a_date_within_its_second_is_no_skew():
    # sent at .4, the first server's date is the whole second before: the hop took under a second
    assert chain(0, 0, 0).lines()[0].endswith("(with ESMTP, TLS no) +0.0s")
    assert chain(0, 0, 0).slowest().at == "mx1.lab.test"   # hop 1: the first server


def test_a_date_before_the_hop_before_is_a_clock_that_disagrees_never_a_negative_hop():
    route = chain(5, 2, 6)
    assert route.lines()[1].endswith("(with ESMTPS, TLS yes) clock? (dated 3s before the hop before)")
    assert route.lines()[2].endswith("+1.0s")   # measured from the last date that made sense
    assert chain(5, 6, 6, sent=30).lines()[0].endswith("clock? (dated 25s before the probe was sent)")
    late = chain(1, 2, 59, collected=40)
    assert late.lines()[2].endswith("clock? (dated 19s after the probe was collected)")
    assert late.slowest().number == 2


def test_other_servers_forms_of_tls_and_a_field_without_a_date():
    exchange = stamp("from AM0PR01.eurprd01.prod.exchangelabs.com (2603:10a6:208:1::1) by "
                     "AM0PR02.eurprd01.prod.exchangelabs.com with Microsoft SMTP Server (version=TLS1_2, "
                     "cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.20.1; Mon, 2 Jan 2023 10:00:00 +0000")
    assert exchange.tls and exchange.protocol == "MICROSOFT" and exchange.server.startswith("AM0PR02")
    exim = stamp("from [192.0.2.7] (helo=client.example) by mx.example.org with esmtpsa (TLS1.3) tls "
                 "TLS_AES_256_GCM_SHA384 (Exim 4.96) (envelope-from <a@example.org>) id 1q; "
                 "Mon, 02 Jan 2023 10:00:00 +0100")
    assert (exim.sender, exim.protocol, exim.tls) == ("[192.0.2.7]", "ESMTPSA", True)
    assert exim.date == date_of("Mon, 02 Jan 2023 09:00:00 +0000")
    sendmail = stamp("from relay.example (relay.example [198.51.100.2]) by mx.example (8.17.1/8.17.1) with "
                     "ESMTP id 302A (version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256 verify=NOT); "
                     "Mon, 2 Jan 2023 10:00:00 GMT")
    assert sendmail.tls and sendmail.sender == "relay.example [198.51.100.2]"
    route = hops(["by local.example with LMTP id 1", "by x with ESMTP; no date here"], T0, T0 + 10)
    assert [h.line() for h in route.hops] == ["hop 1: ? -> x (with ESMTP, TLS no) date?",
                                             "hop 2: ? -> local.example (with LMTP, TLS no) date?"]
    assert route.slowest() is None


def test_names_are_shown_safely_and_briefly():
    s = stamp("from evil|x\x1b[31m (=?utf-8?q?a=7Cb?= [10.0.0.1]) by " + "a" * 500 + " with ESMTP; " + DAY % 1)
    assert s.sender == "evil?x?[31m [10.0.0.1]"
    assert len(s.server) == MAX_NAME and s.server.endswith("...")


def test_hundreds_of_received_fields_are_read_in_bounded_time_and_shown_in_part():
    fields = [POSTFIX_TLS % (i % 60) for i in range(3000)]
    started = time.monotonic()
    route = hops(fields, T0, T0 + 60)
    assert time.monotonic() - started < 2.0
    assert len(route.hops) <= MAX_RECEIVED and route.dropped == 3000 - len(route.hops)
    lines = route.lines()
    assert lines[0].startswith("(%d older Received fields not read" % route.dropped)
    assert len(lines) == MAX_SHOWN + 2 and "hops not shown" in lines[MAX_SHOWN // 2 + 1]


def test_unbalanced_comments_quotes_and_deep_nesting_cost_little():
    for value in ["from (" * 5000 + "x", 'from "' + "a" * 9000, "(" * 3000 + ")" * 3000 + "by z; " + DAY % 3,
                  "from a by b; ; ; ;" * 300, "\\" * 9000, ";" + "x" * 9000]:
        started = time.monotonic()
        stamp(value)
        assert time.monotonic() - started < 0.5


received = st.one_of(
    st.text(max_size=300),
    st.builds(lambda a, b, p, d: "from %s by %s with %s; %s" % (a, b, p, d),
              st.text(max_size=30), st.text(max_size=30), st.sampled_from(["ESMTP", "ESMTPS", "LMTP", "", "x("]),
              st.one_of(st.text(max_size=40),
                        st.integers(-10 ** 6, 10 ** 6).map(lambda s: email.utils.formatdate(T0 + s)))),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(received, max_size=40), st.floats(-1e7, 1e7, allow_nan=False),
       st.one_of(st.none(), st.floats(-1e7, 1e7, allow_nan=False)))
def test_any_fields_give_hops_in_order_none_negative_none_raising(fields, sent, collected):
    route = hops(fields, T0 + sent, None if collected is None else T0 + collected)
    assert [h.number for h in route.hops] == list(range(1, len(fields) + 1))
    for hop in route.hops:
        assert hop.seconds is None or hop.seconds >= 0
        assert (hop.seconds is None) == bool(hop.doubt)
        line = hop.line()
        assert "\n" not in line and "\r" not in line and "|" not in line and "+-" not in line
    slowest = route.slowest()
    assert slowest is None or slowest.seconds == max(h.seconds for h in route.hops if h.seconds is not None)


def test_the_slowest_hop_is_said_in_plain_seconds_even_after_days():
    from check_mail_roundtrip.auth_results import Verdicts
    from check_mail_roundtrip.route import Traced

    route = hops([POSTFIX_TLS % 0, POSTFIX_PLAIN % 0], T0 - 1036800.0, T0 + 60)
    assert Traced("p", 1036801.0, route, Verdicts("h")).slowest_words() == "slowest hop: 1036800s at mx1.lab.test"
