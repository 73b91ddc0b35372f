"""tls-privsep: a privilege-separated TLS server.

Everything installs under this one package (``tls_privsep.shared``, ``.secured``, ``.appd``,
``.launcher``) so that a user's own ``shared`` or ``launcher`` package can never stand in for ours.
"""

__version__ = "0.1.0"
