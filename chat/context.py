"""What of a conversation the model is sent: its history, cut to the model's context window.

The policy (docs/context-and-budget.md says it for users and operators):

* The window is `context_tokens(model)`. The answer's `max_tokens` (`max_output_tokens`)
  and the system prompt are set aside first; what is left is the budget for the messages.
* The history is a list of exchanges: a user message and the answer it got. Whole
  exchanges are dropped, oldest first, until the rest fits. The exchange being answered
  is always sent, and so is the system prompt. If that exchange alone does not fit, the
  send is refused (`ContextTooLong`, 400).
* How many exchanges were left out is stored on the answer (`context_omitted_turns`), so
  the page can say so next to it.

Tokens are estimated here, not counted: Anthropic's token counting endpoint costs a round
trip per send (and is out of reach of the machines that run our tests), and no tokenizer
published for current Claude models exists to count with locally. See `estimate_tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import catalog
from .conf import chat_settings
from .errors import ContextTooLong
from .providers import ChatTurn

# Framing the API adds around each message (its role and separators) and around the
# request: a few tokens each, rounded up.
PER_MESSAGE_TOKENS = 8
PER_REQUEST_TOKENS = 16


def context_tokens(model: str) -> int:
    """The context window of `model` (an offered id), in tokens: its `context_tokens` in
    `CHAT_MODELS`, capped by `CHAT_CONTEXT_TOKENS` (a site may send less than a model
    takes: every answer is sent the history again, and paid for)."""
    return min(catalog.model_for_run(model).context_tokens, chat_settings.CONTEXT_TOKENS)


def max_output_tokens(model: str) -> int:
    """An answer's `max_tokens`: the model's `max_output_tokens`, capped by `CHAT_MAX_TOKENS`."""
    return min(catalog.model_for_run(model).max_output_tokens, chat_settings.MAX_TOKENS)


def estimate_tokens(text: str) -> int:
    """An over-estimate of the tokens `text` is to Claude, for typical text.

    One token per 2.5 ASCII characters, and one per 2 bytes of every other character in
    UTF-8 (an accented letter or Cyrillic: 1 token; Chinese or Japanese: 1.5; an emoji:
    2). Measured against Anthropic's published (pre-Claude 3) tokenizer, this is 1.4-1.6
    times the real count for English prose, markdown, Python and JavaScript, 1.3-1.4
    times for Chinese and Japanese, 1.4 for German, 2.0 for Russian, and about 1.0 for
    JSON, long numbers and emoji-heavy chat: the margin absorbs a newer tokenizer that
    needs more tokens for the same text. Random data (hex, base64) is the exception, at
    0.6-0.7: there a conversation may still be too long, and the model says so
    (`upstream_error`), as it would without this policy.
    """
    if text.isascii():
        return -(-len(text) * 2 // 5)
    ascii_chars = len(text.encode("ascii", "ignore"))
    other_bytes = len(text.encode("utf-8", "surrogatepass")) - ascii_chars
    return -(-(4 * ascii_chars + 5 * other_bytes) // 10)


@dataclass(frozen=True)
class ContextWindow:
    messages: list[ChatTurn]  # what the model is sent, oldest first
    omitted_turns: int  # earlier exchanges left out, to fit
    # The estimated input tokens of the request: the usage stored for an answer whose
    # provider never said (chat/runs/run.py).
    input_tokens: int = 0


def fit_history(
    history: list[ChatTurn], *, model: str, system: str, max_tokens: int
) -> ContextWindow:
    """The newest whole exchanges of `history` that fit the model's context window.

    Raises `ContextTooLong` when the newest exchange (the one being answered) does not
    fit on its own.
    """
    framing = estimate_tokens(system) + PER_REQUEST_TOKENS
    budget = context_tokens(model) - max_tokens - framing
    exchanges = _exchanges(history)
    kept: list[list[ChatTurn]] = []
    used = 0
    for exchange in reversed(exchanges):
        cost = sum(estimate_tokens(turn.content) + PER_MESSAGE_TOKENS for turn in exchange)
        if used + cost > budget:
            if not kept:
                raise ContextTooLong(_too_long(needed=cost, budget=budget, max_tokens=max_tokens))
            break
        kept.append(exchange)
        used += cost
    return ContextWindow(
        messages=[turn for exchange in reversed(kept) for turn in exchange],
        omitted_turns=len(exchanges) - len(kept),
        input_tokens=framing + used,
    )


def _exchanges(history: list[ChatTurn]) -> list[list[ChatTurn]]:
    """`history` as exchanges: each user turn with the answer that follows it."""
    exchanges: list[list[ChatTurn]] = []
    for turn in history:
        if turn.role == "user" or not exchanges:
            exchanges.append([turn])
        else:
            exchanges[-1].append(turn)
    return exchanges


def _too_long(*, needed: int, budget: int, max_tokens: int) -> str:
    if budget <= 0:
        return (
            "The system prompt and the answer's allowance of "
            f"{max_tokens:,} tokens fill the model's context window: shorten the system prompt."
        )
    return (
        f"This message is too long for the model's context window: it needs about "
        f"{needed:,} tokens, and about {budget:,} are left once the system prompt and the "
        f"answer's allowance of {max_tokens:,} tokens are set aside. Shorten it."
    )
