"""The async Ray Data UDF that asks the vision model, one request per row, within the job's limits.

Used by ``python -m platform.label posts.csv`` as
``map_batches(Labeler, compute=ActorPoolStrategy(size=..., max_concurrent_calls_per_actor=...))``.
Every attempt first asks the shared ``Gate`` actor (rate, tokens, concurrency, budget, and whether
the row was answered already: an actor Ray restarted re-runs its whole batch, and those rows must
not be paid twice), so rows of a batch run concurrently without any actor exceeding the job's
limits. Each row's image is read here, just before its first attempt, and sent only if it still
holds what the driver's scan checked (platform/label/inputs.py). Each process is a lease holder
of its own (a fresh id, heartbeats): the slots of a process that dies come back
(platform/label/leases.py). The API key is read from this process's environment, never received
through Ray (platform/label/secret.py). The openai client makes no
retries of its own: this module retries 429, 5xx, timeouts, connection errors, malformed bodies
and invalid replies with exponential backoff and full jitter, waiting at least Retry-After (but
never longer than ``retry_after_cap``: a server asking for a day would stall every worker). A row
whose attempts end in a connection error is quarantined; only when the server never answered
anything in the whole job does it end the job ("cannot reach the API").
Requests ask for the reply schema with ``response_format`` (platform/label/reply.py) until the
API refuses it with a 400 naming it: the process then asks without it from then on, that row again
at once (no retry spent, nothing quarantined), and the tolerant parser reads the replies. While a
process does not know yet, its requests with ``response_format`` go one at a time, so such an API
refuses one request a process, not every row in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

import openai
import pandas as pd
import ray

from platform.label import inputs, reply, secret
from platform.label.gate import REVOKED
from platform.label.leases import HEARTBEAT_S
from platform.label.task import Task

BACKOFF_CAP_S = 60.0
# The longest a 429's Retry-After pauses the job, whatever the server asks: past a minute it is a
# quota for the hour or the day, not for the minute, and waiting for it silently looks like a hang.
RETRY_AFTER_CAP_S = 60.0


@dataclass
class Settings:
    base_url: str
    model: str
    timeout_s: float
    max_retries: int
    backoff_s: float
    price_in: float  # USD per million prompt tokens
    price_out: float
    openrouter: bool
    key_digest: str  # secret.digest of the driver's key: the actors read the key itself from their environment
    task: Task  # pickled by value (platform/label/cli.py): the actors need not import its module


class Fatal(Exception):
    """A failure that is the job's, not the row's: stop every worker."""


class FormatRefused(Exception):
    """The API does not take ``response_format``: the request, not the row, must change."""


class Labeler:
    def __init__(self, settings: Settings, gate: Any):
        self._settings = settings
        self._task = settings.task
        self._gate = gate
        self._key = secret.read()
        self._holder = uuid.uuid4().hex  # this process: Ray's restart of the actor is another holder
        self._client: openai.AsyncOpenAI | None = None
        self._heartbeat: asyncio.Task | None = None
        # Whether the API takes response_format: None until one of this process's requests finds out.
        self._structured: bool | None = None
        self._finding_out = asyncio.Lock()
        gate.join.remote(self._holder, ray.get_runtime_context().get_actor_id())

    async def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        if self._client is None:  # made on the loop that runs the calls
            if problem := secret.problem(self._settings.key_digest):
                await self._gate.abort.remote(problem)
                return pd.DataFrame([self._blank(row, reason="fatal") for row in batch.to_dict("records")])
            self._client = openai.AsyncOpenAI(
                api_key=self._key,
                base_url=self._settings.base_url,
                timeout=self._settings.timeout_s,
                max_retries=0,
            )
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())
        rows = batch.to_dict("records")
        results = await asyncio.gather(*(self._label(row) for row in rows))
        return pd.DataFrame(results)

    async def _beat(self) -> None:
        """Tells the gate this process lives, so the slots it holds stay its own."""
        while True:
            try:
                await self._gate.beat.remote(self._holder)
            except ray.exceptions.RayError:  # the job is over: its gate is gone
                return
            await asyncio.sleep(HEARTBEAT_S)

    def _blank(self, row: dict[str, Any], reason: str = "") -> dict[str, Any]:
        return {
            "key": row["key"],
            "id": row["id"],
            "status": "skipped",
            "label": None,
            "reason": reason,
            "model": self._settings.model,
            "prompt_version": self._task.version,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cost_usd": 0.0,
            "latency_s": None,
            "attempts": 0,
        }

    async def _label(self, row: dict[str, Any]) -> dict[str, Any]:
        s = self._settings
        result = self._blank(row)
        # Read here, not in the driver: only the rows in flight hold their image.
        image = await asyncio.to_thread(inputs.planned_image, row["image_path"], row["digest"])
        if isinstance(image, str):  # never sent: nothing paid, not cached
            return {**result, "status": "quarantined", "reason": image}
        row = {**row, "image": image}
        error, attempt = "", 0
        while attempt <= s.max_retries:
            grant = await self._grant(row)
            if "lease" not in grant:
                return grant.get("answered") or {**result, "reason": grant["stop"]}
            result["attempts"] += 1
            outcome = {"lease": grant["lease"], "estimate": int(row["tokens"]), "retry": attempt > 0}
            try:
                error = await self._attempt(row, outcome, result)
            except Fatal as fatal:
                await self._gate.done.remote(outcome)
                await self._gate.abort.remote(str(fatal))
                return {**result, "reason": "fatal"}
            if outcome.get("again"):  # refused for its response_format: asked again without, no retry spent
                await self._gate.done.remote(outcome)
                continue
            last = error is None or outcome.get("final") or attempt == s.max_retries
            if last and error is not None and not error.startswith("connection_error"):
                result.update(status="quarantined", reason=self._scrub(error))
            await self._gate.done.remote(outcome, result if result["status"] != "skipped" else None)
            if result["status"] != "skipped":
                return result
            if last:
                break
            await asyncio.sleep(max(self._backoff(attempt), outcome.get("pause_s") or 0.0))
            attempt += 1
        if not await self._gate.reachable.remote(s.timeout_s):
            # Nothing in the whole job ever got an answer: the server, not this row, is the problem.
            await self._gate.abort.remote(f"cannot reach the API at {s.base_url} ({error.split(': ', 1)[-1]})")
            return {**result, "reason": "fatal"}
        # Not cached (nothing was paid for): a re-run asks again.
        return {**result, "status": "quarantined", "reason": self._scrub(error)}

    async def _grant(self, row: dict[str, Any]) -> dict[str, Any]:
        while True:
            grant = await self._gate.acquire.remote(row["key"], self._holder, int(row["tokens"]))
            if grant.get("stop") != REVOKED:
                return grant
            # The gate took this process for dead (it stalled past the lease): the next heartbeat
            # says otherwise.
            await asyncio.sleep(HEARTBEAT_S)

    async def _attempt(self, row: dict[str, Any], outcome: dict[str, Any], result: dict[str, Any]) -> str | None:
        """One request: ``None`` once it labeled ``result``, else why not (``outcome`` says what happened)."""
        started = time.monotonic()
        try:
            answer = await self._ask(row)
            self._book(answer, outcome, result)
            content = answer.choices[0].message.content if answer.choices else None
            label, reason = self._task.parse(content)
        except FormatRefused as refused:
            outcome.update(kind=f"http_{refused.args[0]}", used_tokens=0, again=True)
            return f"format_refused: {refused.args[1]}"
        except reply.ReplyError as err:
            outcome["kind"] = "invalid_reply"
            return f"invalid_reply: {err}"
        except Exception as err:  # noqa: BLE001 - sorted by _classify; anything unknown is a row failure
            return self._classify(err, outcome)
        outcome["kind"] = "ok"
        result.update(status="labeled", label=label, reason=reason, latency_s=round(time.monotonic() - started, 3))
        return None

    async def _ask(self, row: dict[str, Any]) -> Any:
        """One chat completion, with ``response_format`` unless the API refused it; raises FormatRefused."""
        s = self._settings
        async with self._one_at_a_time_until_known():
            structured = self._structured is not False
            try:
                answer = await self._client.chat.completions.create(
                    **self._task.request(s.model, row["image"], row["mime"], row["text"], structured),
                    # OpenRouter reports the request's real cost when asked.
                    extra_body={"usage": {"include": True}} if s.openrouter else None,
                )
            except openai.APIStatusError as err:
                said = f"{_message(err)} {err.body}"
                if structured and reply.refused(err.status_code, said):
                    self._structured = False  # before the lock is let go: no one else asks with it
                    raise FormatRefused(err.status_code, _message(err)) from None
                self._learn(structured, err.status_code >= 500)
                raise
            except (openai.APITimeoutError, openai.APIConnectionError):
                raise  # no reply: nothing learnt
            except Exception:
                self._learn(structured, True)  # a reply came back (malformed): the request was taken
                raise
            self._learn(structured, True)
            return answer

    def _learn(self, structured: bool, taken: bool) -> None:
        """An API validates a request's parameters before it runs it: a reply or a server error to a
        request with ``response_format`` says the API takes it (a 429 may come before validation).
        Else a failing first request would hold the process's others back until one succeeds."""
        if structured and taken:
            self._structured = True

    @contextlib.asynccontextmanager
    async def _one_at_a_time_until_known(self):
        """Holds the process's requests to one in flight while it does not know whether the API takes
        ``response_format``; lets every request through once it does."""
        if self._structured is None:
            await self._finding_out.acquire()
            try:
                if self._structured is None:
                    yield
                    return
            finally:
                self._finding_out.release()
        yield

    def _scrub(self, error: str) -> str:
        """A quarantine reason is written to quarantine.csv: never with the key in it."""
        return error.replace(self._key, "***") if self._key else error

    def _book(self, reply: Any, outcome: dict[str, Any], result: dict[str, Any]) -> None:
        usage = getattr(reply, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        reported = getattr(usage, "cost", None)
        cost = (
            float(reported)
            if isinstance(reported, (int, float))
            else (prompt_tokens * self._settings.price_in + completion_tokens * self._settings.price_out) / 1e6
        )
        outcome.update(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost_usd=cost)
        if usage is not None:  # what the tokens-per-minute limit is settled with
            # The provider counted max_tokens when it let the request in (OpenAI: "the maximum of
            # max_tokens and the estimated number of tokens"), whatever was then written.
            outcome["used_tokens"] = prompt_tokens + max(completion_tokens, self._task.generation["max_tokens"])
        # A row's tokens and cost add up over its attempts: invalid replies are paid for too.
        result["prompt_tokens"] += prompt_tokens
        result["completion_tokens"] += completion_tokens
        result["cost_usd"] = round(result["cost_usd"] + cost, 10)

    def _classify(self, err: Exception, outcome: dict[str, Any]) -> str:
        """The quarantine reason for ``err``; marks ``outcome`` (kind, pause, final); raises Fatal."""
        base_url = self._settings.base_url
        if isinstance(err, openai.APITimeoutError):
            outcome["kind"] = "timeout"
            return f"timeout: no reply within {self._settings.timeout_s:g}s"
        if isinstance(err, openai.APIConnectionError):
            outcome["kind"] = "connection_error"
            cause = err.__cause__ or err
            return f"connection_error: {type(cause).__name__}: {str(cause).splitlines()[0][:120] if str(cause) else ''}"
        if isinstance(err, openai.APIStatusError):
            code = err.status_code
            outcome["kind"] = f"http_{code}"
            if code < 500 and code != 429:
                outcome["used_tokens"] = 0  # refused, not run: it counts against no token limit
            # A 429's tokens stay taken: the provider's bucket was emptier than ours, and giving them
            # back would send the next request into the same 429 at once (OpenAI counts it anyway).
            if code in (401, 403):
                raise Fatal(f"the API at {base_url} rejected the key (HTTP {code}): check OPENROUTER_API_KEY or OPENAI_API_KEY")
            if code == 402:
                raise Fatal(f"the API at {base_url} refused payment (HTTP 402): add credits or lower the load")
            if code == 404:
                raise Fatal(f"HTTP 404 from {base_url}: check --base-url and --model {self._settings.model!r}")
            if code == 429:
                asked = retry_after(err.response.headers)
                outcome["pause_s"] = min(asked, retry_after_cap(self._settings.timeout_s))
                if asked > outcome["pause_s"]:
                    outcome["retry_after_asked_s"] = asked  # the gate counts it; the driver says so
                return "rate_limited: HTTP 429 on every attempt"
            if code >= 500:
                return f"http_{code}: server error on every attempt"
            outcome["final"] = True  # the request itself is wrong for this row: asking again won't help
            return f"http_{code}: {_message(err)}"
        outcome["kind"] = "malformed_response"
        return f"malformed_response: {type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, base * 2^attempt], capped."""
        return random.uniform(0, min(BACKOFF_CAP_S, self._settings.backoff_s * 2**attempt))


def retry_after_cap(timeout_s: float) -> float:
    """The longest pause a Retry-After gets: ``--timeout`` (a 429 holds a row no longer than a reply
    may take), and never more than RETRY_AFTER_CAP_S."""
    return min(RETRY_AFTER_CAP_S, timeout_s)


def retry_after(headers: Any) -> float:
    """Seconds the server asked us to wait (``retry-after-ms``, ``Retry-After`` seconds or date), else 0."""
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if not value:
            return 0.0
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return 0.0


def _message(err: openai.APIStatusError) -> str:
    body = err.body if isinstance(err.body, dict) else {}
    message = body.get("message") or (body.get("error") or {}).get("message") if body else None
    return " ".join(str(message or err.message or "").split())[:160]
