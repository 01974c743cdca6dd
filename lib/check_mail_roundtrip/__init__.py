"""check_mail_roundtrip: a Nagios/Icinga plugin that proves mail flows end to end.

Each run collects the probe mails that came back (IMAP), evaluates round-trip
latency, probes in flight and lost probes against thresholds, prints one status
line with perfdata and sends the next probe (SMTP).
"""

__version__ = "0.2.0"
