"""A strict local fake of the OpenAI and Anthropic APIs, for the real SDKs pointed at it.

It extends the demo's strict upstream (:class:`resilience.demo.upstream.Upstream`: the same
sliding window of ``limit`` requests per ``window`` seconds on the server's own clock, the same
request log and figures) with the two providers' endpoints, spoken closely enough for
``openai.AsyncOpenAI(base_url=server.openai_base_url)`` and
``anthropic.AsyncAnthropic(base_url=server.anthropic_base_url)``:

- ``POST /v1/chat/completions`` (OpenAI): the ``chat.completion`` object, or with
  ``stream=True`` server-sent ``chat.completion.chunk`` events ending in ``data: [DONE]``, with a
  final usage chunk when ``stream_options={"include_usage": true}``;
- ``POST /v1/messages`` (Anthropic): the ``message`` object, or with ``stream=true`` the events
  ``message_start``, ``content_block_start``, ``ping``, ``content_block_delta``...,
  ``content_block_stop``, ``message_delta`` (with usage), ``message_stop``.

**Quotas.** A call is admitted when fewer than ``limit`` calls were admitted in the last
``window`` seconds and, for each configured token quota (``token_limit`` on input + output,
Anthropic-style ``input_token_limit`` / ``output_token_limit``), the tokens admitted in the
window plus the call's own stay within it. A call's tokens are known from the request alone
(:func:`count_tokens`: a quarter of the prompt's characters, rounded up, and
``ceil(max_tokens * output_ratio)`` output tokens), so a benchmark can know them. Everything else
is answered the providers' way: a 429 with their error body (OpenAI ``{"error": {"type":
"requests" | "tokens", "code": "rate_limit_exceeded", ...}}`` with ``retry-after-ms`` and
``retry-after``; Anthropic ``{"type": "error", "error": {"type": "rate_limit_error", ...}}`` with
``retry-after``), the rate-limit headers on every answer (OpenAI ``x-ratelimit-{limit,remaining,
reset}-{requests,tokens}`` with Go durations such as ``"1s"``, ``"6m0s"``; Anthropic
``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}``
with RFC 3339 times) and request ids (``x-request-id`` resp. ``request-id``). A reset is the time
until the oldest admission in the window leaves it (when ``remaining`` next grows). The
advertised limits (``advertised_limit``, ``advertised_token_limit``) may be set higher than the
enforced ones: a quota lower than advertised.

**Faults.** Scripted answers (:class:`Fault`, :meth:`AIUpstream.script`) replace the next
requests' answers in order: 500/503, Anthropic's 529 ``overloaded_error``, a billing 429 (OpenAI
``insufficient_quota``, Anthropic's spend limit), 400, 413, a 429 with chosen hints, an explicit
``x-should-retry``, a slow answer, an ``error`` event in the middle of a stream. Configured
faults: ``fail_rate`` (503s), a slow tail (``slow_rate`` of the admitted calls take
``slow_delay`` seconds longer), and another client of the same key that exhausts the whole quota
every ``exhaust_every`` seconds. Scripted error answers consume no quota.

**Figures.** :meth:`AIUpstream.ai_stats` (and ``GET /__fake__/stats``) counts requests, answers
per status, quota 429s, the most admissions and tokens in any window, tokens admitted, and the
``x-stainless-retry-count`` values the SDKs sent (a value above 0 is a retry of the SDK's own).

In-process::

    async with await start_ai_upstream(limit=30, window=2.0) as server:
        client = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="test")
        ...
    stats = server.stats()

As a process (for several client processes): ``python -m resilience.demo.ai --port 0
--limit 30 --window 2`` prints one JSON line ``{"url": ...}`` and serves until SIGTERM/SIGINT;
:class:`AIUpstreamProcess` does this from Python, scripts faults with ``POST /__fake__/script``
and reads the figures. The server binds loopback addresses only.
"""

from __future__ import annotations

from resilience.demo.ai._wire import Provider, count_tokens, go_duration
from resilience.demo.ai.faults import Fault
from resilience.demo.ai.process import AIUpstreamProcess, main
from resilience.demo.ai.server import (
    ANTHROPIC_PATH,
    CONTROL_PATH,
    OPENAI_PATH,
    AICall,
    AIStats,
    AIUpstream,
    AIUpstreamServer,
    start_ai_upstream,
)

__all__ = [
    "ANTHROPIC_PATH",
    "CONTROL_PATH",
    "OPENAI_PATH",
    "AICall",
    "AIStats",
    "AIUpstream",
    "AIUpstreamProcess",
    "AIUpstreamServer",
    "Fault",
    "Provider",
    "count_tokens",
    "go_duration",
    "main",
    "start_ai_upstream",
]
