"""TLS client contexts: certificates verified unless the user opts out."""

import ssl


def client_context(ca_file=None, insecure=False):
    """An SSLContext that verifies the server against *ca_file* or the system store.

    Only *insecure* (the ``--insecure`` option) turns verification off.
    """
    ctx = ssl.create_default_context(cafile=ca_file)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
