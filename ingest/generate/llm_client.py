"""Chat-completions requests through the official ``openai`` client, and their cache keys.

Any OpenAI-compatible server works (a hosted API, vLLM, Ollama, llama.cpp's server): the
prompt goes as one user message. Retries with exponential backoff on 408/409/429/5xx,
timeouts and dropped connections are the client's own (``max_retries``; a server's
``Retry-After`` is honoured). ``structured`` asks for ``{"descriptors": [...]}`` through
``response_format`` (a JSON schema); a server that refuses it with a 400 is asked again
without, once noted for the rest of the run. The API key is held by the client only:
it is never part of a request key, a log line or an error message (it is masked out).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai
from openai.types.chat import ChatCompletionMessageParam

from whyclip.store import InputError, WhyclipError

log = logging.getLogger(__name__)
DEFAULT_BASE_URL = "https://api.openai.com/v1"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "descriptors",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"descriptors": {"type": "array", "items": {"type": "string"}}},
            "required": ["descriptors"],
            "additionalProperties": False,
        },
    },
}


class GenerationError(WhyclipError):
    """The LLM server could not be asked, or kept failing."""


@dataclass(frozen=True)
class ChatRequest:
    """One question for one class: ``sample`` counts answers asked for (``--n``), ``attempt``
    the retries after an empty answer (each at a higher temperature)."""

    class_name: str
    prompt: str
    temperature: float
    max_tokens: int
    structured: bool
    sample: int = 0
    attempt: int = 0

    @property
    def parameters(self) -> dict:
        return {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "structured": self.structured,
            "sample": self.sample,
            "attempt": self.attempt,
        }


def public_url(url: str) -> str:
    """The base URL without a trailing slash and without any user:password part."""
    parts = urlsplit(url.strip())
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), parts.query, "")) or url


def request_key(base_url: str, model: str, request: ChatRequest) -> str:
    """sha256 of everything that decides the answer: base URL, model, the message, the parameters."""
    payload = {
        "base_url": public_url(base_url),
        "model": model,
        "messages": [{"role": "user", "content": request.prompt}],
        "parameters": request.parameters,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def resolve_api_key(env_var: str, base_url: str) -> str:
    """The key from ``env_var``; a local server without one gets a placeholder (they accept any)."""
    value = os.environ.get(env_var, "").strip()
    if value:
        return value
    if (urlsplit(base_url).hostname or "") in LOCAL_HOSTS:
        return "whyclip-local"
    raise InputError(
        f"no API key: set the environment variable {env_var} (or name another with --api-key-env); "
        "a local server accepts any non-empty value"
    )


class ChatClient:
    """Asks one model on one server; thread-safe (requests run concurrently)."""

    def __init__(self, base_url: str, model: str, api_key: str, *, timeout: float = 60.0, max_retries: int = 4):
        self.base_url, self.model = base_url, model
        self._secret = api_key
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries)
        self._lock = threading.Lock()
        self.structured_refused: str | None = None  # why, once the server refused response_format

    def mask(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def ask(self, request: ChatRequest) -> tuple[str, str]:
        """(the answer's raw text, mode): mode is ``structured``, ``list``, or ``list-fallback``
        when ``structured`` was asked for and the server refused it."""
        if request.structured and self.structured_refused is None:
            try:
                return self._create(request, RESPONSE_FORMAT), "structured"
            except openai.BadRequestError as exc:
                with self._lock:
                    if self.structured_refused is None:
                        self.structured_refused = self.mask(_describe(exc))
                        log.warning(
                            "the server refused response_format (%s): falling back to list parsing",
                            self.structured_refused,
                        )
        return self._create(request, None), "list-fallback" if request.structured else "list"

    def _create(self, request: ChatRequest, response_format: dict | None) -> str:
        extra: dict[str, Any] = {"response_format": response_format} if response_format else {}
        messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": request.prompt}]
        try:
            resp = self._client.chat.completions.create(
                model=self.model,
                messages=messages,
                temperature=request.temperature,
                max_tokens=request.max_tokens,
                **extra,
            )
        except openai.BadRequestError as exc:
            if response_format:
                raise
            raise self._error(request, exc) from None
        except openai.APIError as exc:
            raise self._error(request, exc) from None
        if not resp.choices:
            return ""
        return resp.choices[0].message.content or ""

    def _error(self, request: ChatRequest, exc: BaseException) -> GenerationError:
        return GenerationError(
            f"class {request.class_name!r}: {self.mask(_describe(exc))} (server {public_url(self.base_url)}, "
            f"model {self.model!r}); the answers so far are cached: rerun to resume"
        )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, openai.APITimeoutError):
        return "the request timed out after every retry: raise --timeout or check the server"
    if isinstance(exc, openai.APIConnectionError):
        return "cannot reach the server: check --base-url and that the server runs"
    if isinstance(exc, openai.AuthenticationError):
        return "the server refused the API key (401): check the key's environment variable"
    if isinstance(exc, openai.NotFoundError):
        return "not found (404): check --base-url (it usually ends in /v1) and --model"
    if isinstance(exc, openai.APIStatusError):
        body = exc.body.get("message") if isinstance(exc.body, dict) else exc.body
        message = body if isinstance(body, str) and body else exc.message
        return f"the server answered {exc.status_code}: {' '.join(message.split())[:200]}"
    return " ".join(str(exc).split())[:200]
