"""Helpers shared by the tests."""

from __future__ import annotations

import os
import shutil
import socket

from services.support import free_port

__all__ = ["free_port", "require_binary", "require_port", "unavailable"]

import pytest

ON_CI = os.environ.get("CI") == "true"


def unavailable(reason: str) -> None:
    """Skip a test whose real dependency is missing here; under CI=true that is a failure."""
    if ON_CI:
        pytest.fail(f"{reason} (CI=true: dependencies must be present, not skipped)")
    pytest.skip(reason)


def require_binary(binary: str, hint: str) -> str:
    path = shutil.which(binary)
    if path is None:
        unavailable(f"{binary} not installed: {hint}")
    assert path is not None
    return path


def require_port(host: str, port: int, what: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError:
        unavailable(f"{what} is not reachable at {host}:{port}")
