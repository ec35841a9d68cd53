"""
The one cwtx error that needs Twisted: a cancelled job's Deferred fails with
a Twisted ``CancelledError``, as every cancelled Deferred does, and that
error is a :class:`~cwtx.CwtxError` too.  (cwtx._errors stays free of
Twisted, because the slot child imports it.)
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError

from cwtx._errors import CwtxError


class JobCancelled(CancelledError, CwtxError):
    """The job was cancelled before it ended."""
