"""The transports a run is handed, and the mail system in memory that stands in for them.

transports.for_settings chooses the real collector and sender from the
settings; the real collectors (IMAP, POP3) and the one in memory offer what
mail.Collector names.  The mail system in memory (tests/memlab) delivers
after its delay with a Received header and a whole-second INTERNALDATE,
keeps what a collector examined by UIDVALIDITY, removes exactly what it is
told, waits by moving its clock, and reflects with the reflector's own rules.
"""

import datetime

import pytest

from check_mail_roundtrip import collect, pop3, smtp
from check_mail_roundtrip.budget import Deadline
from check_mail_roundtrip.failure import StepFailure
from check_mail_roundtrip.imap import ImapCollector
from check_mail_roundtrip.ledger import SOURCES
from check_mail_roundtrip.mail import Collector, Fetched
from check_mail_roundtrip.pop3 import Pop3Collector
from check_mail_roundtrip.probe import recognise, search_key
from check_mail_roundtrip.reflection import read_stamp
from check_mail_roundtrip.transports import Transports, for_settings
from tests.memlab import MONITOR, START, MailSystem, MemCheck, plain_mail, probe_text
from tests.memlab.collector import MemoryCollector

SECRET = b"k" * 32


def a_probe(to=MONITOR):
    """A probe of profile "p" sent at the start, as the check sends it: (probe, text)."""
    return probe_text(SECRET, "p", START, to=to)


class Endpoint:
    protocol = "IMAP"
    user = MONITOR


class Pop3Endpoint(Endpoint):
    protocol = "POP3"


def session(mail, endpoint=Endpoint, **options):
    return MemoryCollector(mail, endpoint, "INBOX", **options)


# -- the transports a run is handed ------------------------------------------------------

@pytest.mark.parametrize("collect_by", ["imap", "pop3"])
def test_for_settings_hands_the_protocol_collector_and_smtp(tmp_path, collect_by):
    settings = MemCheck(MailSystem(), tmp_path).settings("--collect", collect_by)
    transports = for_settings(settings)
    assert transports == Transports(collect.open_collector, smtp.send)
    collector = transports.open_collector(settings.collect, settings.folder, Deadline(0.0))
    assert type(collector) is {"imap": ImapCollector, "pop3": Pop3Collector}[collect_by]  # not connected yet


def test_the_real_collectors_and_the_one_in_memory_offer_what_a_collector_is():
    names = [n for n in vars(Collector) if not n.startswith("_") or n in ("__enter__", "__exit__")]
    assert set(names) >= {"find", "fetch", "settle", "remove", "name", "wait", "__enter__", "__exit__"}
    imap = ImapCollector(Endpoint, "INBOX", Deadline(0.0))
    pop = Pop3Collector(Endpoint, Deadline(0.0))
    for collector in (imap, pop, session(MailSystem())):
        for name in names:
            assert callable(getattr(collector, name)), (collector, name)
        for attribute in Collector.__annotations__:
            assert hasattr(collector, attribute), (collector, attribute)


# -- delivery ------------------------------------------------------------------------------

def test_mail_arrives_after_the_delay_with_a_received_date_and_a_whole_second_internaldate():
    mail = MailSystem()
    mail.mailbox(MONITOR)
    mail.delay, mail.skew = 2.5, -3.0
    mail.clock.advance(0.25)
    mail.send(a_probe()[1], MONITOR, MONITOR, Endpoint, None)
    mail.clock.advance(2.0)
    mail.deliver_due()
    assert mail.mailbox(MONITOR).messages() == []
    mail.clock.advance(0.75)
    mail.deliver_due()
    (message,) = mail.mailbox(MONITOR).messages()
    arrival = START + 0.25 + 2.5 - 3.0   # the server's clock is 3 s behind
    assert message.internaldate == float(int(arrival))
    assert pop3.received_date(message.headers) == float(int(arrival))
    assert message.headers.startswith(b"Received: from monitor by mx.memory.test") and message.headers.endswith(b"\r\n\r\n")


def test_lost_held_junk_filed_and_bounced_mail():
    mail = MailSystem()
    box = mail.mailbox(MONITOR)
    mail.lose(1)
    for subject in ("lost", "held", "junk"):
        if subject == "held":
            mail.hold()
        if subject == "junk":
            mail.release()
            mail.junk_filter = True
        mail.submit("a@memory.test", MONITOR, plain_mail(subject))
    mail.submit("a@memory.test", "nobody@memory.test", plain_mail("bounced"))
    mail.deliver_due()
    assert len(mail.lost) == 1 and len(mail.bounced) == 1
    # the filter's verdict is taken when the mail is handed over
    assert box.subjects("INBOX") == ["held"] and box.subjects("Junk") == ["junk"]


def test_a_new_uidvalidity_gives_every_message_a_new_uid():
    mail = MailSystem()
    box = mail.mailbox(MONITOR)
    for n in range(3):
        mail.append(MONITOR, plain_mail("mail %d" % n))
    box.folders["INBOX"].messages[1].deleted = True
    box.folders["INBOX"].renumber()
    folder = box.folders["INBOX"]
    assert folder.uidvalidity == 2 and sorted(folder.messages) == [1, 2, 3] and folder.next_uid == 4
    assert [m.subject for m in folder.live()] == ["mail 1", "mail 2"]


# -- the collector in memory -----------------------------------------------------------------

def test_a_collector_reads_each_candidate_once_and_what_is_to_be_removed_until_it_is_gone():
    mail = MailSystem()
    mail.mailbox(MONITOR)
    probe, text = a_probe()
    mail.send(text, MONITOR, MONITOR, Endpoint, None)
    mail.append(MONITOR, plain_mail("no probe here"))
    memory = {}
    key = search_key("p")
    with session(mail, memory=memory) as c:
        refs = c.find(key)
        (item,) = c.fetch(refs)
        assert isinstance(item, Fetched) and item.source == "INTERNALDATE" and item.internaldate == START
        assert recognise(item.headers, SECRET, "p") == (probe, None)
        c.settle(refs, refs)   # examined, and to be removed (the removal did not happen)
    with session(mail, memory=memory) as c:
        assert c.find(key) == refs  # looked at again until it is gone
        c.remove(refs)
        c.settle(refs, [])
    with session(mail, memory=memory) as c:
        assert c.find(key) == [] and mail.mailbox(MONITOR).subjects() == ["no probe here"]
    mail.mailbox(MONITOR).folders["INBOX"].renumber()
    with session(mail, memory=memory) as c:
        assert c.find("no probe") == [("INBOX", 1)]
        assert c.notes == ["folder INBOX changed (UIDVALIDITY): searching all of it"]


def test_without_uidplus_removed_probes_stay_flagged_unless_the_folder_is_dedicated():
    for dedicated in (False, True):
        mail = MailSystem()
        box = mail.mailbox(MONITOR, uidplus=False)
        for _ in range(2):
            mail.send(a_probe()[1], MONITOR, MONITOR, Endpoint, None)
        mail.append(MONITOR, plain_mail("someone's deleted mail")).deleted = True
        with session(mail, dedicated=dedicated) as c:
            c.remove(c.find(search_key("p")))
        assert box.messages() == []
        if dedicated:  # a plain EXPUNGE: every mail flagged \Deleted goes
            assert c.unexpunged is None and box.folders["INBOX"].messages == {}
        else:          # the probes wait for an EXPUNGE, counted; the other mail is no probe
            assert c.unexpunged == 2 and len(box.folders["INBOX"].messages) == 3


def test_pop3_reads_every_new_mail_with_the_received_date_and_cannot_search_by_date():
    mail = MailSystem()
    mail.mailbox(MONITOR)
    mail.send(a_probe()[1], MONITOR, MONITOR, Endpoint, None)
    mail.append(MONITOR, plain_mail("other mail"))
    with session(mail, Pop3Endpoint) as c:
        items = c.fetch(c.find(search_key("p")))
        assert [i.source for i in items] == ["Received", "Received"] and SOURCES["Received"]
        # the other mail was there first; it has no Received header
        assert [i.internaldate for i in items] == [None, START]
        assert c.find("MRTP1.", before=datetime.date(2030, 1, 1)) == []
        assert c.name(items[1].ref) == "UIDL m2"


def test_a_step_fails_as_armed_and_works_again():
    mail = MailSystem()
    mail.mailbox(MONITOR)
    mail.fail("IMAP login", "[AUTHENTICATIONFAILED] Authentication failed.", times=1)
    with pytest.raises(StepFailure, match=r"^IMAP login failed: \[AUTHENTICATIONFAILED\] Authentication failed$"):
        session(mail).__enter__()
    with session(mail) as c:
        assert c.find("x") == []
    assert mail.sessions == 1


def test_wait_moves_the_clock_to_the_next_delivery_or_to_its_end():
    mail = MailSystem()
    mail.mailbox(MONITOR)
    mail.delay = 3.0
    mail.send(a_probe()[1], MONITOR, MONITOR, Endpoint, None)
    until = Deadline(mail.clock.monotonic() + 10, mail.clock.monotonic)
    with session(mail) as c:
        assert c.wait(until) and mail.clock.now == START + 3
        assert len(c.find(search_key("p"))) == 1
        assert not c.wait(until) and mail.clock.now == START + 10 and c.watching == "IDLE in memory"
    polled = Deadline(mail.clock.monotonic() + 2.5, mail.clock.monotonic)
    with session(mail, idle=False) as c:
        assert [c.wait(polled) for _ in range(4)] == [True, True, True, False]
        assert mail.clock.now == START + 12.5


def test_a_reflector_sends_a_verified_probe_back_stamped_and_drops_the_rest():
    mail = MailSystem()
    box = mail.mailbox(MONITOR)
    echo = mail.reflector("echo@far.test", SECRET, pause=0.5, back=2.0, skew=1.0)
    mail.delay = 1.0
    probe, text = a_probe(to="echo@far.test")
    mail.send(text, MONITOR, "echo@far.test", Endpoint, None)
    mail.send("From: %s\nSubject: hello\n\nhi\n" % MONITOR, MONITOR, "echo@far.test", Endpoint, None)
    mail.clock.advance(10)
    mail.deliver_due()
    (message,) = box.messages()
    assert recognise(message.headers, SECRET, "p") == (probe, None)
    received, sent = read_stamp(message.headers, probe.token(SECRET), SECRET)
    assert (received, sent) == ((START + 1 + 1) * 1000, (START + 1 + 1 + 0.5) * 1000)  # its clock is 1 s ahead
    assert message.internaldate == START + 3   # arrived at + 3.5 s: whole seconds
    assert echo.dropped == ["no probe signed with this secret"]
