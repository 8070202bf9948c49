"""Errors meant for people: the message says what to change. The CLI prints them as one line."""


class OrchardError(Exception):
    """Base of every error Orchard reports to a person without a traceback."""
