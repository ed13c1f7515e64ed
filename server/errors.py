"""Exceptions the server raises to its callers (console, CLI, HTTP layer)."""


class ServerError(Exception):
    """Base of every error the server reports to a person; `str()` is the message.

    `code`, when set, is one of the `protocol` refusal codes: a client tells such
    a refusal apart by it rather than by the message's words.
    """

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class EnvironmentFault(ServerError):
    """The machine, not the code, is at fault: port taken, folder unwritable, disk
    full."""


class PortInUseError(EnvironmentFault):
    """The configured port is already taken by another program."""


class DataDirError(EnvironmentFault):
    """The data folder cannot be created or written."""


class DatabaseTooNewError(EnvironmentFault):
    """The database was written by a newer Deploy Console than this one."""


class NotFoundError(ServerError):
    """A device, package or deployment id that does not exist."""


class InvalidRequestError(ServerError):
    """A request that is well-formed but not acceptable (empty target list, ...)."""


class DiskFullError(EnvironmentFault):
    """The data folder's disk has no room left for a package."""


class ConflictError(InvalidRequestError):
    """The request does not fit the object's state (cancel a finished deployment)."""


class PayloadTooLargeError(InvalidRequestError):
    """An upload or request body past the configured size limit."""
