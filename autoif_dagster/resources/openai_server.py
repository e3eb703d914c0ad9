"""The openai backend: any OpenAI-compatible server (`vllm serve`, Ray Serve LLM, a hosted API)
at `base_url`, up to `max_concurrency` requests in flight."""

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from .generation import ChatRequest, Completion, Finished, GenerationStats, Generator, LLMError, alternatives


class OpenAIGenerator(Generator):
    def model_identity(self) -> str:
        return f"served:{self.settings.model}"  # the server's weights are not ours to fingerprint

    def generate(self, requests: Sequence[ChatRequest], stats: GenerationStats, finished: Finished,
                 log: Any) -> None:
        if self.settings.adapter is not None:
            raise LLMError("backend 'openai' serves adapters by name: start the server with --enable-lora "
                           "--lora-modules NAME=DIR and set model to NAME, adapter to None")
        start = time.perf_counter()
        try:
            self._send(requests, finished)
        finally:
            stats.seconds += time.perf_counter() - start

    def _send(self, requests: Sequence[ChatRequest], finished: Finished) -> None:
        import httpx

        if not self.settings.base_url:
            raise LLMError("backend 'openai' needs base_url (e.g. http://127.0.0.1:8000/v1)")
        url = self.settings.base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {self.settings.api_key}"}
        with httpx.Client(timeout=self.settings.request_timeout_s, headers=headers) as client:
            self._check_server(client, url)
            with ThreadPoolExecutor(self.settings.max_concurrency) as pool:
                futures = {pool.submit(self._post, client, url, r): i for i, r in enumerate(requests)}
                try:
                    for future in as_completed(futures):
                        finished(futures[future], future.result())
                finally:  # interrupted: do not send what has not started
                    for future in futures:
                        future.cancel()

    def _check_server(self, client: Any, url: str) -> None:
        import httpx

        try:
            resp = client.get(f"{url}/models")
            resp.raise_for_status()
        except httpx.HTTPError as exc:
            raise LLMError(f"cannot reach the LLM server at {url}: {exc}") from exc
        served = [m.get("id") for m in resp.json().get("data", [])]
        if self.settings.model not in served:
            raise LLMError(f"the server at {url} does not serve model {self.settings.model!r}; it serves {served}")

    def _post(self, client: Any, url: str, r: ChatRequest) -> Completion:
        import httpx

        body: dict[str, Any] = {
            "model": self.settings.model,
            "messages": r.messages,
            "max_tokens": r.max_tokens,
            "temperature": r.temperature,
            "top_p": r.top_p,
            "seed": r.seed,
        }
        if r.top_logprobs:
            body.update(logprobs=True, top_logprobs=r.top_logprobs)
        if r.json_schema:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": r.json_schema},
            }
        attempt = 0
        while True:
            try:
                resp = client.post(f"{url}/chat/completions", json=body)
            except httpx.TransportError as exc:
                resp = None
                if attempt == 2:
                    raise LLMError(f"the LLM server at {url} stopped answering: {exc}") from exc
            if resp is not None and resp.status_code < 500:
                break
            if resp is not None and attempt == 2:
                break
            attempt += 1
            time.sleep(2**attempt)
        if resp.status_code >= 400:  # this one request was refused (e.g. too long): data, not a crash
            return Completion("", "error", 0, f"HTTP {resp.status_code}: {resp.text[:200]}")
        payload = resp.json()
        choice = payload["choices"][0]
        steps = ((choice.get("logprobs") or {}).get("content") or []) if r.top_logprobs else []
        return Completion(
            choice["message"].get("content") or "",
            choice.get("finish_reason") or "stop",
            int((payload.get("usage") or {}).get("completion_tokens", 0)),
            top_logprobs=tuple(alternatives((t["token"], t["logprob"]) for t in step.get("top_logprobs") or [])
                               for step in steps),
        )
