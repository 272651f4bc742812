"""Errors any app raises and every edge (page, API, command) turns into the same answer."""


class NotFound(LookupError):
    """Lookups that miss; the message says which part of the address was wrong."""
