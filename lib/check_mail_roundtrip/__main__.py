"""Allow ``python -m check_mail_roundtrip``."""
from check_mail_roundtrip.entry import check

check()
