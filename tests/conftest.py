"""Shared pytest configuration.

The mail lab fixtures (`lab`, `lab_session`, `graph`: the Graph stand-in, `relay_lab`: a relay hop before the lab) live in tests/lab/fixtures.py;
tests that use them, or the plugin installed on this machine as README's
install section says (`installed_plugin`), are marked `lab` automatically, so
`-m "not lab"` runs everything that needs no daemons and changes nothing
outside the checkout.
"""

from hypothesis import settings

from tests.lab.fixtures import graph, graph_reset, lab, lab_session, relay_lab, relay_lab_reset  # noqa: F401  (pytest fixtures)
from tests.lab.plugin import installed_plugin  # noqa: F401  (pytest fixture)

# Property tests have no deadline per example: the suite runs in two workers beside the lab's
# daemons, and a slow example on a busy machine is not a failure.
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")

LAB_FIXTURES = {"lab", "lab_session", "installed_plugin", "graph", "relay_lab"}


def pytest_configure(config):
    if not any(m.split(":")[0].strip() == "lab" for m in config.getini("markers")):
        config.addinivalue_line("markers", "lab: needs the loopback mail lab (Postfix + Dovecot)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if LAB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker("lab")
