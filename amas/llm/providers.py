"""HTTP clients for the two API kinds a provider can speak, and how their failures are classified.

The contract every provider keeps, which the router relies on:

- ``chat`` sends exactly one HTTP request and returns a ``Reply`` or raises ``ProviderError``.
  It never retries, never sleeps, and raises nothing else for network or protocol trouble.
- ``ProviderError.transient`` is true for timeouts, connection failures, 429 and 5xx: the same
  request may succeed later, so the router may retry it. Every other failure (400, 401, 403,
  404, any other 4xx, a body that is not the documented shape) is permanent for this provider:
  the router fails over at once.
- No reason, repr or log line holds the key. Reasons are built here from the status and the
  response's own error text with the key masked; 401/403 bodies are never quoted, because some
  APIs echo part of the key back in them.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import httpx
from pydantic import SecretStr

from amas.config import LLMProvider

Message = Mapping[str, str]
"""One chat message: ``{"role": "system" | "user" | "assistant", "content": "..."}``."""

Failure = Literal["timeout", "connection", "rate_limited", "server_error", "rejected", "malformed"]

_DETAIL_CHARS = 160


@dataclass(frozen=True)
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int


class ProviderError(Exception):
    """One failed request; ``str()`` is a one-line reason without secrets."""

    def __init__(self, reason: str, *, failure: Failure, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.failure = failure
        self.status = status
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        return self.failure in ("timeout", "connection", "rate_limited", "server_error")


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent or unreadable."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError):
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _one_line(text: str, key: str | None) -> str:
    if key:
        text = text.replace(key, "***")
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"


def _error_detail(response: httpx.Response, key: str | None) -> str:
    """The API's own error message (OpenAI ``error.message``, Ollama ``error``), masked and shortened."""
    try:
        body = response.json()
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        error = error.get("message")
    return _one_line(error, key) if isinstance(error, str) else ""


def _count(usage: Any, field: str) -> int:
    """A token count; absent counts are 0 (some servers omit usage), wrong types are a malformed body."""
    if not isinstance(usage, dict) or usage.get(field) is None:
        return 0
    value = usage[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProviderError(f"malformed response: {field} is not a token count", failure="malformed")
    return value


class ChatProvider:
    """One configured endpoint; subclasses say where to POST, what to send and how to read the reply."""

    kind: ClassVar[str]
    path: ClassVar[str]

    def __init__(self, config: LLMProvider, *, client: httpx.Client, key: SecretStr | None,
                 timeout_seconds: float, temperature: float) -> None:
        self.config = config
        self.name = config.name
        self.model = config.model
        self.timeout_seconds = timeout_seconds
        self._client = client
        self._key = key
        self._temperature = temperature

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, base_url={self.config.base_url!r}, model={self.model!r})"

    @property
    def url(self) -> str:
        return self.config.base_url + self.path

    def payload(self, messages: Sequence[Message], *, max_tokens: int, temperature: float) -> dict[str, Any]:
        raise NotImplementedError

    def parse(self, body: Any) -> Reply:
        raise NotImplementedError

    def chat(self, messages: Sequence[Message], *, max_tokens: int) -> Reply:
        headers = {"Accept": "application/json"}
        key = self._key.get_secret_value() if self._key is not None else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        body = self.payload(messages, max_tokens=max_tokens, temperature=self._temperature)
        try:
            response = self._client.post(self.url, json=body, headers=headers, timeout=self.timeout_seconds)
        except httpx.TimeoutException:
            raise ProviderError(f"timed out after {self.timeout_seconds:g} s", failure="timeout") from None
        except httpx.TransportError as exc:
            raise ProviderError(f"connection failed: {_one_line(str(exc) or type(exc).__name__, key)}",
                                failure="connection") from None
        except httpx.RequestError as exc:
            raise ProviderError(f"request failed: {type(exc).__name__}", failure="malformed") from None
        if not 200 <= response.status_code < 300:
            raise self._status_error(response, key)
        try:
            data = response.json()
        except ValueError:
            raise ProviderError("malformed response: body is not JSON", failure="malformed",
                                status=response.status_code) from None
        return self.parse(data)

    def _status_error(self, response: httpx.Response, key: str | None) -> ProviderError:
        status = response.status_code
        if status in (401, 403):
            return ProviderError(f"HTTP {status}: the provider refused the key (check api_key or api_key_env)",
                                 failure="rejected", status=status)
        detail = _error_detail(response, key)
        reason = f"HTTP {status}" + (f": {detail}" if detail else "")
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after is not None:
                reason += f" (Retry-After {retry_after:g} s)"
            return ProviderError(reason, failure="rate_limited", status=status, retry_after=retry_after)
        if status >= 500:
            return ProviderError(reason, failure="server_error", status=status)
        return ProviderError(reason, failure="rejected", status=status)


class OpenAIProvider(ChatProvider):
    """Any OpenAI-compatible chat-completions API (OpenAI, vLLM, llama.cpp server, LiteLLM, ...)."""

    kind = "openai"
    path = "/chat/completions"

    def payload(self, messages: Sequence[Message], *, max_tokens: int, temperature: float) -> dict[str, Any]:
        return {"model": self.model, "messages": [dict(m) for m in messages], "max_tokens": max_tokens,
                "temperature": temperature, "stream": False}

    def parse(self, body: Any) -> Reply:
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ProviderError("malformed response: no choices[0].message.content", failure="malformed") from None
        if not isinstance(content, str) or not content.strip():
            raise ProviderError("malformed response: the completion is empty", failure="malformed")
        usage = body.get("usage")
        return Reply(content.strip(), _count(usage, "prompt_tokens"), _count(usage, "completion_tokens"))


class OllamaProvider(ChatProvider):
    """Ollama's native chat API, non-streaming."""

    kind = "ollama"
    path = "/api/chat"

    def payload(self, messages: Sequence[Message], *, max_tokens: int, temperature: float) -> dict[str, Any]:
        return {"model": self.model, "messages": [dict(m) for m in messages], "stream": False,
                "options": {"num_predict": max_tokens, "temperature": temperature}}

    def parse(self, body: Any) -> Reply:
        try:
            content = body["message"]["content"]
        except (KeyError, TypeError):
            raise ProviderError("malformed response: no message.content", failure="malformed") from None
        if not isinstance(content, str) or not content.strip():
            raise ProviderError("malformed response: the completion is empty", failure="malformed")
        return Reply(content.strip(), _count(body, "prompt_eval_count"), _count(body, "eval_count"))


PROVIDER_KINDS: dict[str, type[ChatProvider]] = {"openai": OpenAIProvider, "ollama": OllamaProvider}
