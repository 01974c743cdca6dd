"""Which folder is the Junk folder (lib/check_mail_roundtrip/junk.py's pick):
the \\Junk attribute first, then the usual names.  Pure logic, no lab."""

from hypothesis import given, strategies as st

from check_mail_roundtrip.junk import candidates, pick


def listing(*names, junk=None):
    return [((b"\\HasNoChildren",) + ((b"\\Junk",) if n == junk else ()), n) for n in names]


def test_the_folder_flagged_junk_wins_over_every_name():
    assert pick(listing("INBOX", "Junk", "Spam", "Quarantaene", junk="Quarantaene"), "/") == "Quarantaene"


def test_the_flag_is_recognised_in_any_case_and_as_text():
    assert pick([((b"\\HasNoChildren", b"\\JUNK"), "Müll"), ((), "Junk")], "/") == "Müll"
    assert pick([(("\\Junk",), "Werbung")], "/") == "Werbung"


def test_without_a_flag_the_usual_names_count_in_their_order():
    assert pick(listing("INBOX", "Spam", "Junk"), "/") == "Junk"
    assert pick(listing("INBOX", "Junk E-mail", "Spam"), "/") == "Spam"
    assert pick(listing("INBOX", "Junk Email", "Junk E-mail"), "/") == "Junk E-mail"
    assert pick(listing("INBOX", "Junk Email"), "/") == "Junk Email"


def test_names_under_inbox_and_gmail_with_the_servers_separator():
    assert pick(listing("INBOX", "INBOX.Sent", "INBOX.Spam"), ".") == "INBOX.Spam"
    assert pick(listing("INBOX", "INBOX/Junk"), "/") == "INBOX/Junk"
    assert pick(listing("INBOX", "[Gmail]/All Mail", "[Gmail]/Spam"), "/") == "[Gmail]/Spam"
    assert pick(listing("INBOX", "INBOX.Spam"), "/") is None  # "." is not this server's separator


def test_case_does_not_matter_but_the_exact_name_is_preferred():
    assert pick(listing("INBOX", "junk"), "/") == "junk"
    assert pick(listing("INBOX", "SPAM", "Spam"), "/") == "Spam"


def test_no_junk_folder_is_none():
    assert pick(listing("INBOX", "Sent", "Trash", "Drafts"), "/") is None
    assert pick([], None) is None


def test_a_flat_server_has_only_the_top_level_names():
    assert candidates(None) == ["Junk", "Spam", "Junk E-mail", "Junk Email"]
    assert "INBOX.Junk" in candidates(".") and "[Gmail]/Spam" in candidates("/")


names = st.text(alphabet=st.sampled_from("abJjunkSpamINBOX./ [Gmail]-E"), max_size=14)


@given(st.lists(st.tuples(st.booleans(), names), max_size=8), st.sampled_from(["/", ".", None]))
def test_the_answer_is_always_a_listed_folder_and_a_flagged_one_if_any(folders, sep):
    found = pick([((b"\\Junk",) if flagged else (), name) for flagged, name in folders], sep)
    listed = [name for _flagged, name in folders]
    assert found is None or found in listed
    flagged = [name for is_junk, name in folders if is_junk]
    if flagged:
        assert found == flagged[0]
    elif found is not None:
        assert found.lower() in {c.lower() for c in candidates(sep)}
