"""A small OpenAI-compatible chat client: many requests, a thread pool, retries with backoff.

Used by the `openai` generation backend (`generation.OpenAIBackend`: a sample source of
responses from other LLMs, the paper's ChatGPT / text-davinci sources) and by LLM judges. Only the standard library is needed (urllib); any server that speaks
`POST {base_url}/chat/completions` works (OpenAI, vLLM, llama.cpp, TGI, ...).

Security: the API key is read from the environment variable named by `api_key_env` at request
time and sent only as an `Authorization: Bearer` header. It is never a config field, never logged,
and scrubbed from error messages in case a server echoes it back.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

RETRY_STATUS = {408, 409, 429}  # plus every 5xx


class RemoteError(Exception):
    """One request failed for good (after retries, or a non-retryable answer)."""

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 1):
        self.status = status
        self.attempts = attempts
        super().__init__(message)


@dataclass
class RemoteConfig:
    """Where and how to call an OpenAI-compatible endpoint (maps 1:1 to YAML)."""

    base_url: str
    model: str
    api_key_env: str = (
        "OPENAI_API_KEY"  # the *name* of the variable; the key itself never lives here
    )
    timeout: float = 60.0  # seconds per HTTP request
    max_retries: int = 4  # extra attempts after the first, for transient failures only
    concurrency: int = 8  # requests in flight
    backoff: float = 1.0  # first retry waits about this long; doubles each retry

    def __post_init__(self):
        if not self.base_url or not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got '{self.base_url}'")
        if not self.model:
            raise ValueError("a remote source needs a model name")
        if self.timeout <= 0 or self.concurrency < 1 or self.max_retries < 0 or self.backoff < 0:
            raise ValueError(
                "timeout > 0, concurrency >= 1, max_retries >= 0, backoff >= 0 required"
            )

    @property
    def endpoint(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"


def as_messages(prompt: str | list[dict]) -> list[dict]:
    """A prompt as chat messages for a remote model (HH transcripts become alternating turns)."""
    if isinstance(prompt, list):
        return prompt
    if "\n\nHuman:" not in prompt:
        return [{"role": "user", "content": prompt}]
    messages = []
    for chunk in prompt.split("\n\nHuman:")[1:]:
        human, _, assistant = chunk.partition("\n\nAssistant:")
        messages.append({"role": "user", "content": human.strip()})
        if assistant.strip():
            messages.append({"role": "assistant", "content": assistant.strip()})
    return messages


class _Transient(Exception):
    """A failure worth retrying (connection refused, timeout, 429, 5xx)."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        self.status, self.retry_after = status, retry_after
        super().__init__(message)


def _scrub(text: str, secret: str | None) -> str:
    text = " ".join(str(text).split())[:300]
    return text.replace(secret, "<redacted>") if secret else text


def _post(cfg: RemoteConfig, payload: dict, api_key: str | None) -> dict:
    """One HTTP attempt. Raises _Transient for retryable failures, RemoteError for the rest."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(
        cfg.endpoint, data=json.dumps(payload).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=cfg.timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as e:
        detail = _scrub(e.read().decode("utf-8", "replace"), api_key)
        if e.code in RETRY_STATUS or e.code >= 500:
            retry_after = e.headers.get("Retry-After") if e.headers else None
            try:
                wait = float(retry_after) if retry_after else None
            except ValueError:
                wait = None
            raise _Transient(f"HTTP {e.code}: {detail}", e.code, wait) from None
        raise RemoteError(f"HTTP {e.code} from {cfg.endpoint}: {detail}", status=e.code) from None
    except TimeoutError as e:
        raise _Transient(f"timed out after {cfg.timeout:g}s ({e})") from None
    except urllib.error.URLError as e:  # connection refused, DNS, reset, timeout while connecting
        raise _Transient(f"connection failed: {_scrub(e.reason, api_key)}") from None
    except (OSError, http.client.HTTPException) as e:  # reset mid-read, incomplete read
        raise _Transient(f"connection failed: {type(e).__name__}: {_scrub(e, api_key)}") from None
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        raise _Transient(f"invalid JSON in the response: {_scrub(body[:200], api_key)}") from None


def _texts(data: dict, cfg: RemoteConfig) -> list[str]:
    try:
        choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
        return [c["message"]["content"] or "" for c in choices]
    except (KeyError, TypeError, AttributeError):
        raise RemoteError(
            f"unexpected response shape from {cfg.endpoint}: {str(data)[:200]}"
        ) from None


def chat_one(
    cfg: RemoteConfig,
    messages: list[dict],
    *,
    temperature: float = 0.0,
    max_tokens: int = 256,
    n: int = 1,
    seed: int | None = None,
    rng: random.Random | None = None,
) -> list[str]:
    """n completions of one conversation, retrying transient failures with exponential backoff.

    Some servers cap or ignore `n`; missing completions are asked for again (up to n requests).
    """
    api_key = os.environ.get(cfg.api_key_env) or None
    rng = rng or random.Random()
    out: list[str] = []
    for _ in range(n):  # normally one round; more only when the server returned fewer than n
        payload = {
            "model": cfg.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "n": n - len(out),
        }
        if seed is not None:
            payload["seed"] = seed + len(out)
        attempt = 0
        while True:
            attempt += 1
            try:
                out += _texts(_post(cfg, payload, api_key), cfg)
                break
            except _Transient as e:
                if attempt > cfg.max_retries:
                    raise RemoteError(
                        f"{cfg.endpoint}: {e} (gave up after {attempt} attempts)",
                        status=e.status,
                        attempts=attempt,
                    ) from None
                # exponential backoff with jitter so that many threads do not retry in lockstep
                wait = cfg.backoff * 2 ** (attempt - 1) * (0.5 + rng.random())
                time.sleep(max(wait, min(e.retry_after or 0.0, 60.0)))
        if len(out) >= n:
            break
    return out[:n]


def chat_many(
    cfg: RemoteConfig,
    conversations: list[list[dict]],
    *,
    temperature: float = 0.0,
    max_tokens: int = 256,
    n: int = 1,
    seed: int | list[int] | None = None,
    desc: str = "remote",
) -> list[list[str] | Exception]:
    """Completions for many conversations, `cfg.concurrency` at a time, in input order.

    Each entry is the list of n texts, or the Exception that ended that request after retries:
    one bad request never fails the batch; the caller decides what to do with failures.
    `seed` is one seed for all requests or one per conversation (servers may ignore it).
    """
    from tqdm.auto import tqdm

    results: list[list[str] | Exception] = [RemoteError("not run")] * len(conversations)
    lock = threading.Lock()

    def work(i: int) -> None:
        try:
            res: list[str] | Exception = chat_one(
                cfg,
                conversations[i],
                temperature=temperature,
                max_tokens=max_tokens,
                n=n,
                seed=seed[i] if isinstance(seed, list) else seed,
                rng=random.Random(i),
            )
        except Exception as e:  # a bug in one request must not take down the others
            res = e if isinstance(e, RemoteError) else RemoteError(f"{type(e).__name__}: {e}")
        with lock:
            results[i] = res

    if not conversations:
        return []
    if isinstance(seed, list) and len(seed) != len(conversations):
        raise ValueError(f"{len(seed)} seeds for {len(conversations)} conversations")
    with ThreadPoolExecutor(max_workers=min(cfg.concurrency, len(conversations))) as pool:
        futures = [pool.submit(work, i) for i in range(len(conversations))]
        with tqdm(
            total=len(futures), desc=desc, unit="req", dynamic_ncols=True, leave=False
        ) as bar:
            for _ in as_completed(futures):
                bar.update(1)
    return results
