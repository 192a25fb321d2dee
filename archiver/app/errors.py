"""The errors that stop the sink with exit status 1, shared by the primary and its workers."""

from __future__ import annotations


class ServiceError(RuntimeError):
    """The sink failed in a way the operator must hear of: the message says what and where;
    the process exits 1."""


class StartupError(ServiceError):
    """The sink cannot start; the message says why and what to do."""
