"""The privileged daemon: TLS 1.3 handshake, private keys, session tickets, traffic-state export."""
