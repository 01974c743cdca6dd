"""pytest fixtures for the mail lab (imported by tests/conftest.py).

lab_session  one running MailLab for the whole pytest session
lab          the same lab, reset() before each test (no faults, empty mailboxes)
graph        the Microsoft Graph mail stand-in (tests/lab/graph.py) on that lab, started
             once per session; graph_reset (autouse) resets it, and the lab, before
             each test that uses it

If the lab cannot be installed or started the tests that use it fail with
the reason and the tail of the Postfix/Dovecot logs; they are never skipped.
"""

import os

import pytest

from .lab import MailLab, install


@pytest.fixture(scope="session")
def lab_session():
    lab = MailLab(keep=bool(os.environ.get("LAB_KEEP")))
    try:
        if os.geteuid() == 0:
            install(verbose=False)
        lab.start()
    except Exception as exc:  # noqa: BLE001  (any reason must fail the tests, loudly)
        logs = lab.logs(40)
        lab.stop(keep=True)
        pytest.fail("mail lab could not start: %s\n%s" % (exc, logs), pytrace=False)
    try:
        yield lab
    finally:
        lab.stop()


@pytest.fixture
def lab(lab_session):
    try:
        lab_session.reset()
    except Exception as exc:  # noqa: BLE001
        pytest.fail("mail lab reset failed: %s\n%s" % (exc, lab_session.logs(40)),
                    pytrace=False)
    return lab_session


def _running(part, what, logs=lambda: ""):
    """Start *part*, yield it, stop it; if it cannot start the tests fail with *what*, the
    reason and logs()."""
    try:
        part.start()
    except Exception as exc:  # noqa: BLE001  (any reason must fail the tests, loudly)
        text = logs()
        part.stop()
        pytest.fail("%s could not start: %s%s" % (what, exc, "\n" + text if text else ""), pytrace=False)
    try:
        yield part
    finally:
        part.stop()


def _reset_before(request, name):
    """Before a test that uses the fixture *name*: its reset(), and the lab reset as the `lab`
    fixture resets it."""
    if name in request.fixturenames:
        request.getfixturevalue(name).reset()
        if "lab" not in request.fixturenames:
            request.getfixturevalue("lab")


@pytest.fixture(scope="session")
def graph(lab_session):
    from .graph import GraphStandIn
    yield from _running(GraphStandIn(lab_session), "the Graph stand-in")


@pytest.fixture(autouse=True)
def graph_reset(request):
    """Before a test that uses `graph`: no requests, connections or faults counted,
    and the lab reset as the `lab` fixture resets it."""
    _reset_before(request, "graph")


@pytest.fixture(scope="session")
def relay_lab(lab_session):
    from .relay import RelayLab
    relay = RelayLab(lab_session)
    yield from _running(relay, "the relay lab", lambda: relay.logs(40))


@pytest.fixture(autouse=True)
def relay_lab_reset(request):
    """Before a test that uses `relay_lab`: no hold in mx1, its queue empty, and the lab
    reset as the `lab` fixture resets it."""
    _reset_before(request, "relay_lab")
