"""The seed's name for local clusters (``cw.mp``): the same as cwtx.local."""

from cwtx.local import *  # noqa: F403
from cwtx.local import __all__  # noqa: F401
