"""An offline model, so a new checkout streams a real-looking answer with no API key."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from .base import ProviderRequest, StreamEnd, TextDelta, Usage

_ANSWER = """\
Thanks for trying **chatsite**! I'm the built-in *demo model*: no API key is set, \
so I answer offline, but I stream exactly like Claude would.

You said:

> {prompt}

Here is what happens while you read this:

1. Your message was saved, and a **generation run** started on the server.
2. Each piece of text is appended to a replay buffer and published to every open stream.
3. The text is checkpointed to the database about twice a second.

```python
# Set a key to talk to Claude instead of me:
ANTHROPIC_API_KEY = "sk-ant-..."
```

Reload the page mid-answer: the stream resumes where it left off, with nothing lost \
and nothing repeated.
"""

_TOKEN_RE = re.compile(r"\S+\s*|\s+")


class DemoProvider:
    def __init__(self, *, tokens_per_second: float = 30.0) -> None:
        self.delay = 1.0 / tokens_per_second if tokens_per_second > 0 else 0.0

    def answer_for(self, request: ProviderRequest) -> str:
        prompt = request.messages[-1].content if request.messages else ""
        quoted = " ".join(prompt.split())[:200] or "(nothing)"
        return _ANSWER.format(prompt=quoted)

    async def stream(
        self, request: ProviderRequest
    ) -> AsyncIterator[TextDelta | Usage | StreamEnd]:
        answer = self.answer_for(request)
        output_tokens = 0
        yield Usage(_count_input(request))
        for token in _TOKEN_RE.findall(answer):
            if output_tokens >= request.max_tokens:
                yield StreamEnd("max_tokens", _count_input(request), output_tokens)
                return
            if self.delay:
                await asyncio.sleep(self.delay)
            output_tokens += 1
            yield TextDelta(token)
        yield StreamEnd("end_turn", _count_input(request), output_tokens)


def _count_input(request: ProviderRequest) -> int:
    words = len(request.system.split()) + sum(len(t.content.split()) for t in request.messages)
    return max(words, 1)
