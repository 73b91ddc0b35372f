"""Pure code both daemons import: no trio, no sockets, no key files."""
