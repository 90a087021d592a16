"""Errors a user can act on: the CLI prints them as one line, without a traceback."""
from __future__ import annotations


class UserError(Exception):
    """Bad input or a failed external step; the message names the problem and the fix."""
