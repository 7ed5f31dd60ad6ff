"""Instants in UTC: every interval bound, as-of and label time in the library goes through here."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(value: datetime | str) -> datetime:
    """An aware UTC datetime from an ISO string or a datetime (naive values are taken as UTC,
    as pymongo returns them unless the client is tz_aware)."""
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
