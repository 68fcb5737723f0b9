"""The project's error hierarchy.

Services raise these; the API maps them to JSON `{"code", "message"}` with the
status below, and the SSE view to plain HTTP refusals. Like DRF's exceptions,
each class carries `status_code`, `default_code` and `default_detail`.
"""

from __future__ import annotations


class ChatError(Exception):
    status_code = 400
    default_code = "error"
    default_detail = "The request could not be completed."

    retry_after: int | None = None

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        self.message = message or self.default_detail
        self.code = code or self.default_code
        super().__init__(self.message)

    @property
    def body(self) -> dict:
        return {"code": self.code, "message": self.message}

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after else {}


class BadRequest(ChatError):
    default_code = "bad_request"
    default_detail = "The request could not be understood."


class Forbidden(ChatError):
    status_code = 403
    default_code = "permission_denied"
    default_detail = "You do not have permission to do this."


class NotFound(ChatError):
    status_code = 404
    default_code = "not_found"
    default_detail = "Not found."


class RunActive(ChatError):
    status_code = 409
    default_code = "run_active"
    default_detail = (
        "An answer is still being generated in this conversation; wait for it to finish."
    )


class ContentTooLong(ChatError):
    status_code = 413
    default_code = "content_too_long"
    default_detail = "The message is too long."


class RequestTooLarge(ChatError):
    """A request body over Django's `DATA_UPLOAD_MAX_MEMORY_SIZE`, refused before it is
    read (chatsite/handlers.py)."""

    status_code = 413
    default_code = "request_too_large"
    default_detail = "The request body is too large."


class ContextTooLong(ChatError):
    """The message being answered does not fit the model's context window on its own
    (earlier turns are dropped to make room, never this one: see chat/context.py)."""

    status_code = 400
    default_code = "context_too_long"
    default_detail = "This message is too long for the model's context window."


class TokenBudgetExhausted(ChatError):
    """The user has used their tokens for today (`CHAT_DAILY_TOKEN_BUDGET`): sends and
    regenerates are refused until the next UTC midnight, which `Retry-After` names."""

    status_code = 429
    default_code = "token_budget_exhausted"
    default_detail = "You have used today's token allowance."

    def __init__(self, message: str | None = None, *, retry_after: int, resets_at: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.resets_at = resets_at

    @property
    def body(self) -> dict:
        # As DRF's throttled responses do, the wait is in the body too; and when it ends.
        return {**super().body, "retry_after": self.retry_after, "resets_at": self.resets_at}


class StreamAuthFailed(ChatError):
    status_code = 401
    default_code = "stream_token_invalid"
    default_detail = "The stream token is missing, expired or not valid for this conversation."


class InvalidResumePosition(ChatError):
    status_code = 400
    default_code = "invalid_last_event_id"
    default_detail = "The Last-Event-ID is not one this server issued."


class MessageFinished(ChatError):
    status_code = 409
    default_code = "message_finished"
    default_detail = "This answer has already finished."


class NotAnAnswer(ChatError):
    status_code = 400
    default_code = "not_an_assistant_message"
    default_detail = "Only assistant messages can be stopped or regenerated."


class NotAUserMessage(ChatError):
    status_code = 400
    default_code = "not_a_user_message"
    default_detail = "Only user messages can be edited."


class InvalidParent(ChatError):
    """A send's `parent` that is not an answer in the conversation (a user message, a
    message of another conversation, or none at all)."""

    status_code = 400
    default_code = "invalid_parent"
    default_detail = "`parent` must be the id of an assistant message in this conversation."


class Unavailable(ChatError):
    status_code = 503
    default_code = "unavailable"
    default_detail = "The service is temporarily unavailable; try again shortly."
    retry_after = 2


class ServerError(ChatError):
    """A bug: answered as JSON under the API's paths (chat/api/errors.py)."""

    status_code = 500
    default_code = "server_error"
    default_detail = "The server failed to handle this request."


class BackendUnavailable(Unavailable):
    """A backend (Redis) did not answer in time or refused: raised by the backends
    themselves, which own their timeouts, so callers catch this one error."""

    default_code = "backend_unavailable"
    default_detail = "Live updates are unavailable; retrying shortly."


class DatabaseUnavailable(Unavailable):
    """The request's database connection failed under it (a restart, a failover, a
    terminated backend): its transaction is gone, so the request is not retried here,
    but the next one gets a new connection."""

    default_code = "database_unavailable"
    default_detail = "The database connection was lost; try again."
    retry_after = 1


class Overloaded(Unavailable):
    """This process is generating as many answers as it may: try again shortly
    (a load balancer may send the retry to another process)."""

    default_code = "overloaded"
    default_detail = "The server is busy generating other answers; try again in a moment."
    retry_after = 2


class TooManyStreams(ChatError):
    status_code = 429
    default_code = "too_many_streams"
    default_detail = "Too many open streams; close a tab or wait for one to end."
    retry_after = 5
