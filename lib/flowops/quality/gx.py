"""Great Expectations, imported quietly: usage analytics off before the first import (GX reads the variable then)."""

from __future__ import annotations

import os
from types import ModuleType

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def gx() -> ModuleType:
    """The `great_expectations` module (imported on first use: about 3 s)."""
    import great_expectations

    return great_expectations


def expectation_class(name: str) -> type | None:
    """GX's class for the snake_case expectation `name`, or None when GX has no such expectation."""
    gx()
    from great_expectations.expectations.registry import get_expectation_impl

    try:
        return get_expectation_impl(name)
    except Exception:  # noqa: BLE001 - GX raises its own ExpectationNotFoundError, or others for odd names
        return None


def expectation_names() -> list[str]:
    """Every expectation GX knows, snake_case."""
    gx()
    from great_expectations.expectations.registry import list_registered_expectation_implementations

    return sorted(list_registered_expectation_implementations())
