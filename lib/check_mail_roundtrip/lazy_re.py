"""Regular expressions compiled on first use, not when their module is imported.

    _WORD = LazyPattern(r"\\w+", re.I)   # nothing compiled yet
    _WORD.findall(text)                  # compiled now, once; then as re.compile's pattern

A run uses few of the patterns its modules define (most are for replies it
does not get, -vvv, or the reflector), so it compiles only those.
"""

from __future__ import annotations

import re
from typing import Any, Optional, Union


class LazyPattern:
    """``re.compile(pattern, flags)`` made when one of its attributes (match, search, sub,
    ...) is first asked for."""

    __slots__ = ("_pattern", "_flags", "_compiled")

    def __init__(self, pattern: Union[str, bytes], flags: int = 0) -> None:
        self._pattern = pattern
        self._flags = flags
        self._compiled: Optional[re.Pattern] = None

    def compiled(self) -> re.Pattern:
        """The compiled pattern (compiled now if it was not yet)."""
        if self._compiled is None:
            self._compiled = re.compile(self._pattern, self._flags)
        return self._compiled

    def __getattr__(self, name: str) -> Any:
        return getattr(self.compiled(), name)
