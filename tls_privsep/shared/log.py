"""structlog set-up shared by both daemons and the launcher.

JSON lines when stderr is not a terminal (journald, files, CI), a readable console otherwise.
Log calls pass names, counts and fingerprints only; no code path hands a secret to a logger.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TypeAlias

import structlog

# What setup() returns and every daemon passes around (bound per channel or connection with .bind()).
Logger: TypeAlias = structlog.typing.FilteringBoundLogger

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def setup(fmt: str = "auto", level: str = "info", *, daemon: str, stream: Any = None) -> Logger:
    """Configure structlog process-wide and return a logger bound to ``daemon``."""
    out = stream or sys.stderr
    json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[  # no merge_contextvars: nothing binds context variables (loggers are bound explicitly)
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=True,  # set up once per process; resolving the config per call is slow
    )
    return structlog.get_logger().bind(daemon=daemon)  # type: ignore[no-any-return]
