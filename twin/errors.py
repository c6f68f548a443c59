"""The GridTwin error family: one base class, subclasses that also inherit a builtin."""

from __future__ import annotations


class TwinError(Exception):
    """Base class of every error GridTwin raises on purpose.

    The message is meant for the person at the keyboard: it says what went wrong and what to do.
    """

    def __str__(self) -> str:  # KeyError's repr-quoting would garble the message
        return str(self.args[0]) if self.args else self.__class__.__name__


class ConfigError(TwinError, ValueError):
    """A setting, URL or option is not usable."""


class LayerNotFoundError(TwinError, KeyError):
    """A layer name is not declared in ``layers/`` or has no version in the store."""


class ValidationError(TwinError, ValueError):
    """Input data do not satisfy a declared rule; nothing was written."""


class DuplicateIdError(ValidationError):
    """Two features or records share an id that must be unique."""


class NotFoundError(TwinError, KeyError):
    """A record (case, version, event) asked for does not exist."""


class StaleUpdateError(TwinError, RuntimeError):
    """An update was based on an old version of a record; someone else changed it first."""


class StoreUnavailableError(TwinError, ConnectionError):
    """The store (database server, file) cannot be reached."""


class PermissionDeniedError(TwinError, PermissionError):
    """The acting role may not do this."""
