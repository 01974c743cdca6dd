"""Shared pytest configuration.

The mail lab fixtures (`lab`, `lab_session`) live in tests/lab/fixtures.py;
tests that use them are marked `lab` automatically, so `-m "not lab"` runs
everything that needs no Postfix/Dovecot.
"""

from tests.lab.fixtures import lab, lab_session  # noqa: F401  (pytest fixtures)
from tests.lab.plugin import installed_plugin  # noqa: F401  (pytest fixture)


def pytest_configure(config):
    if not any(m.split(":")[0].strip() == "lab" for m in config.getini("markers")):
        config.addinivalue_line("markers", "lab: needs the loopback mail lab (Postfix + Dovecot)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "lab" in getattr(item, "fixturenames", ()) or \
                "lab_session" in getattr(item, "fixturenames", ()):
            item.add_marker("lab")
