"""The ``tls-privsep`` command: starts and supervises secured and appd; never reads a key."""
