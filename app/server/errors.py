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

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class FieldError(ServiceError):
    """A problem with one request field; the message starts with the field's name."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")


class InvalidParameter(FieldError):
    status_code = 422
    code = "invalid_parameter"


class PayloadTooLarge(FieldError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(FieldError):
    status_code = 415
    code = "unsupported_media_type"


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class ModelNotFound(ServiceError):
    status_code = 404
    code = "model_not_found"


class VersionNotFound(ServiceError):
    status_code = 404
    code = "version_not_found"


class ModelNotReady(ServiceError):
    """The model (or every model) is not loaded yet, or could not be loaded; worth retrying."""

    status_code = 503
    code = "model_not_ready"

    def __init__(self, message: str, *, retry_after_s: int = LOADING_RETRY_AFTER_S) -> None:
        super().__init__(message, headers=retry_after(retry_after_s))


class Overloaded(ServiceError):
    """The queue is full; the client should retry after `retry_after_s` seconds."""

    status_code = 503
    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers=retry_after(retry_after_s))
        self.retry_after_s = retry_after_s


class ShuttingDown(ServiceError):
    status_code = 503
    code = "shutting_down"

    def __init__(self, message: str = "the service is shutting down") -> None:
        super().__init__(message, headers=retry_after(SHUTDOWN_RETRY_AFTER_S))


class DeadlineExceeded(ServiceError):
    status_code = 504
    code = "deadline_exceeded"


class ModelCallFailed(ServiceError):
    """The model call for a batch raised; details are logged, not returned."""

    status_code = 500
    code = "model_call_failed"


class ClientDisconnected(ServiceError):
    """The client went away before its images were ready; its queued work was dropped."""

    status_code = 499
    code = "client_closed_request"


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ServiceError):
    status_code = 403
    code = "forbidden"
