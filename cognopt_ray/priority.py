"""Task priorities, shared by the scheduler, the settings and the REST API."""

from __future__ import annotations

import enum


class Priority(enum.IntEnum):
    """Task priority: lower runs first, FIFO within a level.

    Example:
        >>> Priority.parse("critical") < Priority.parse(5)
        True
    """

    CRITICAL = 1
    HIGH = 2
    MEDIUM = 3
    LOW = 4
    BACKGROUND = 5

    @classmethod
    def parse(cls, value: int | str | Priority) -> Priority:
        """Accept 1..5, a level name in any case, or a Priority.

        Raises:
            ValueError: naming the allowed values.
        """
        if isinstance(value, Priority):
            return value
        if isinstance(value, bool):
            raise ValueError(f"priority must be 1..5 or one of {cls.names()}, got {value!r}")
        if isinstance(value, int):
            try:
                return cls(value)
            except ValueError:
                raise ValueError(f"priority must be 1..5 or one of {cls.names()}, got {value!r}") from None
        if isinstance(value, str):
            text = value.strip()
            if text.isdigit():
                return cls.parse(int(text))
            try:
                return cls[text.upper()]
            except KeyError:
                pass
        raise ValueError(f"priority must be 1..5 or one of {cls.names()}, got {value!r}")

    @classmethod
    def names(cls) -> list[str]:
        return [p.name.lower() for p in cls]
