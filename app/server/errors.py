"""The service's error hierarchy: each error knows its HTTP status and machine-readable code."""

from __future__ import annotations

# Retry-After for a model still loading: loads take seconds, so a client asking again soon gets served.
LOADING_RETRY_AFTER_S = 2
# Retry-After while shutting down: time for a load balancer to route the retry to another replica.
SHUTDOWN_RETRY_AFTER_S = 5


def retry_after(seconds: int) -> dict[str, str]:
    """The Retry-After header for a wait of `seconds` (at least one)."""
    return {"Retry-After": str(max(1, seconds))}


class ServiceError(Exception):
    """An error the client should see, answered as {"error": {"code", "message"}}."""

    status_code = 500
    code = "internal_error"

    def __init_subclass__(cls, *, status_code: int | None = None, code: str | None = None) -> None:
        """Subclasses state both in their class line: `class NotFound(ServiceError, status_code=404, ...)`."""
        super().__init_subclass__()
        if status_code is not None:
            cls.status_code = status_code
        if code is not None:
            cls.code = code

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class FieldError(ServiceError):
    """A problem with one request field; the message starts with the field's name."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class InvalidParameter(FieldError, status_code=422, code="invalid_parameter"):
    """A field's value is of the wrong type or outside its limits."""


class PayloadTooLarge(FieldError, status_code=413, code="payload_too_large"):
    """A field (or the whole body) is over its size limit."""


class UnsupportedMediaType(FieldError, status_code=415, code="unsupported_media_type"):
    """An upload or body is not in a format the route reads."""


class NotFound(ServiceError, status_code=404, code="not_found"):
    """No such route or resource."""


class ModelNotFound(ServiceError, status_code=404, code="model_not_found"):
    """No model of that name in the store."""


class VersionNotFound(ServiceError, status_code=404, code="version_not_found"):
    """The model has no such version, or it is not served."""


class ModelNotReady(ServiceError, status_code=503, code="model_not_ready"):
    """The model (or every model) is not loaded yet, or could not be loaded; worth retrying."""

    def __init__(self, message: str, *, retry_after_s: int = LOADING_RETRY_AFTER_S) -> None:
        super().__init__(message, headers=retry_after(retry_after_s))


class Overloaded(ServiceError, status_code=503, code="overloaded"):
    """The queue is full; the client should retry after `retry_after_s` seconds."""

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers=retry_after(retry_after_s))
        self.retry_after_s = retry_after_s


class ShuttingDown(ServiceError, status_code=503, code="shutting_down"):
    """The process is draining; another replica should take the request."""

    def __init__(self, message: str = "the service is shutting down") -> None:
        super().__init__(message, headers=retry_after(SHUTDOWN_RETRY_AFTER_S))


class DeadlineExceeded(ServiceError, status_code=504, code="deadline_exceeded"):
    """The request's work did not finish within its deadline."""


class ModelCallFailed(ServiceError, status_code=500, code="model_call_failed"):
    """The model call for a batch raised; details are logged, not returned."""


class ClientDisconnected(ServiceError, status_code=499, code="client_closed_request"):
    """The client went away before its images were ready; its queued work was dropped."""


class Unauthorized(ServiceError, status_code=401, code="unauthorized"):
    """No credentials, or credentials the service does not know."""

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ServiceError, status_code=403, code="forbidden"):
    """The credentials do not allow this request."""


class QuotaExceeded(ServiceError, status_code=429, code="quota_exceeded"):
    """The client's API key has spent its quota for now; the client should retry after `retry_after_s` seconds."""

    def __init__(self, message: str, *, retry_after_s: int | None) -> None:
        super().__init__(message, headers=None if retry_after_s is None else retry_after(retry_after_s))
        self.retry_after_s = retry_after_s


class LargerThanQuota(QuotaExceeded, code="larger_than_quota"):
    """The request asks for more than its key's quota ever allows at once: no wait lets it pass."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after_s=None)
