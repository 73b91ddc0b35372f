"""End-to-end benchmarks of the daemon pair against reference servers (``make bench``; docs/performance.md)."""
