"""Shared test helpers: repository paths and the shared fixtures folder (optional)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """../shared/fixtures next to the repository; tests that need it skip with a clear message without it."""
    path = SHARED / "fixtures"
    if not path.is_dir():
        pytest.skip(f"{path} not found: these tests need the project's shared fixtures next to the repository")
    return path
