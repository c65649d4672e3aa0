"""The service's error hierarchy: each error knows its HTTP status and machine-readable code."""

from __future__ import annotations


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
        self.field = field


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
    status_code = 503
    code = "model_not_ready"


class Overloaded(ServiceError):
    """The queue is full; the client should retry after `retry_after_s` seconds."""

    status_code = 503
    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after_s))})
        self.retry_after_s = retry_after_s


class ShuttingDown(ServiceError):
    status_code = 503
    code = "shutting_down"

    def __init__(self, message: str = "the service is shutting down") -> None:
        super().__init__(message, headers={"Retry-After": "5"})


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
