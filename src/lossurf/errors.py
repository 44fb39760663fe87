"""The one exception type for mistakes a user can fix.

Library code raises :class:`LossurfError` (a ``ValueError``) with a message that names the
problem and the fix; the CLI prints that message alone and exits with code 2. Anything else
that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["LossurfError", "EXIT_USER_ERROR"]

EXIT_USER_ERROR = 2


class LossurfError(ValueError):
    """A user error: bad input, missing data, an incompatible checkpoint."""
