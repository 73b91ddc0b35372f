"""Coverage-guided fuzz harnesses (atheris) for the parsers; see fuzz/README.md."""
