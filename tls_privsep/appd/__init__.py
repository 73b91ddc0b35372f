"""appd: the unprivileged daemon. It owns every TCP socket and no long-lived secret.

It relays each handshake to secured, imports the sealed traffic state that comes back, and from then
on protects records itself (:mod:`appd.stream`) for the application side (:mod:`appd.apps`). A
compromise of this process yields the traffic keys of the sessions it already serves, never a private
key, which is why nothing here may import from ``secured``.
"""
