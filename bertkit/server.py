"""`bertkit serve`: a fine-tuned model behind HTTP, with a small web page to try it.

`POST /v1/predict` answers the model's own task with `{"predictions": [...]}`, each item the same JSON as a
`bertkit predict` line. Concurrent requests are gathered into one model batch (micro-batching): a single
worker takes requests off a queue until it holds `max_batch_size` texts or `max_wait_ms` has passed, runs
the Predictor in a thread, and hands each request its own slice of the results. Bad input is answered with
422 (413 when it is over a limit, 415 when the body is not declared JSON, 400 when it is not UTF-8) and a
one-line message, never with a 500. `/docs` serves Swagger UI from the installed `swagger-ui-bundle`
package, so it works offline.

One base model can serve several adapters (`finetune --peft lora|adapter`) at once: `serve --model BASE
--adapter NAME=DIR ...` loads each adapter on one shared copy of the base weights, and
`POST /v1/adapters/{name}/predict` answers with the adapter the path names (its own task, its own batches).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import uvicorn
from fastapi import Body, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path

from bertkit.errors import BertkitError
from bertkit.inference import Predictor

INDEX_HTML = Path(__file__).parent / "static" / "index.html"
SWAGGER_URL = "/static/swagger-ui"  # Swagger UI's JS and CSS, served from the installed package

@dataclass(frozen=True)
class ServerLimits:
    """How requests are batched, and how much one request may ask for."""

    max_batch_size: int = 32  # texts (QA: question/context items) per model batch
    max_wait_ms: float = 10.0  # how long the first request of a batch waits for company
    max_texts: int = 64  # texts (QA: items) per request
    max_chars: int = 100_000  # characters per text, text pair, question or context: a long document is normal input

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_texts", "max_chars"):
            if getattr(self, name) < 1:
                raise BertkitError(f"--{name.replace('_', '-')} must be at least 1")
        if self.max_wait_ms < 0:
            raise BertkitError("--max-wait-ms must not be negative")

    @property
    def max_body_bytes(self) -> int:
        """A request body no valid request needs: every text and pair at the limit, each char JSON-escaped (6 bytes)."""
        return 2 * self.max_texts * (6 * self.max_chars + 16) + 4096


class BodyLimit:
    """ASGI middleware: a POST body must be declared JSON (415) and stay within `max_bytes` (413).

    The body is read here, chunk by chunk, and counted as it arrives, so a chunked body (no Content-Length)
    is cut off as soon as it passes the limit instead of being read whole; the app then gets the body replayed.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        media_type = headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            return await _refuse(scope, send, 415, f"the body must be JSON (content-type: application/json), not {media_type}")
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            return await _refuse(scope, send, 413, f"the request body has {length} bytes; the limit is {self.max_bytes}")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await _refuse(scope, send, 413, f"the request body has more than {self.max_bytes} bytes; "
                                                       f"the limit is {self.max_bytes}")
            more = message.get("more_body", False)
        body = b"".join(chunks)

        async def replay() -> Message:
            nonlocal body
            if body is None:
                return await receive()  # after the body: wait for the disconnect, as the server would report it
            message, body = {"type": "http.request", "body": body, "more_body": False}, None
            return message

        await self.app(scope, replay, send)


async def _refuse(scope: Scope, send: Send, status: int, detail: str) -> None:
    await JSONResponse({"detail": detail}, status_code=status)(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


class QAItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str
    context: str


class PredictRequest(BaseModel):
    """One of: `texts` (classification, NER), `texts` + `text_pairs` (sentence-pair classification),
    `items` (QA), or a single `question` + `context` (QA)."""

    model_config = ConfigDict(extra="forbid")

    texts: list[str] | None = Field(None, min_length=1, description="classification and NER: the texts")
    text_pairs: list[str] | None = Field(
        None, min_length=1, description="sentence-pair classification: the second text of each pair"
    )
    items: list[QAItem] | None = Field(None, min_length=1, description="question answering: questions and contexts")
    question: str | None = Field(None, description="question answering, one item: the question")
    context: str | None = Field(None, description="question answering, one item: the context")


class PredictResponse(BaseModel):
    predictions: list[dict[str, Any]] = Field(description="one per text or item, in request order, as `bertkit predict` writes them")


class EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(min_length=1, description="the texts to embed")
    pooling: Literal["mean", "cls", "max"] = Field("mean", description="mean and max read real tokens only")
    normalize: bool = Field(True, description="L2-normalise each embedding")


class EmbedResponse(BaseModel):
    embeddings: list[list[float]] = Field(description="one per text, in request order, from the served model's encoder")


class HealthResponse(BaseModel):
    status: str
    model: str
    task: str | None = Field(description="the model's task; null for a base model that serves only adapters")
    labels: list[str] | None = Field(description="the model's labels (classification) or tags (NER); null for QA")
    pairs: bool = Field(description="classification: the model was fine-tuned on sentence pairs")
    backend: str
    adapters: list[str] = Field(default_factory=list,
                                description="the adapters also served here, each at POST /v1/adapters/{name}/predict")


class AdaptersResponse(BaseModel):
    adapters: dict[str, HealthResponse] = Field(description="each adapter served, by name: its directory and task")


_EXAMPLES = {
    "classify": {"summary": "classification", "value": {"texts": ["a great film", "a boring plot"]}},
    "pairs": {"summary": "sentence-pair classification",
              "value": {"texts": ["a man is eating"], "text_pairs": ["someone eats food"]}},
    "ner": {"summary": "NER", "value": {"texts": ["John Smith lives in Paris ."]}},
    "qa": {"summary": "question answering",
           "value": {"items": [{"question": "Where does John live?", "context": "John lives in Paris."}]}},
    "qa_one": {"summary": "question answering, one item",
               "value": {"question": "Where does John live?", "context": "John lives in Paris."}},
}


@dataclass
class _Job:
    examples: list[Any]
    pairs: bool  # sentence-pair examples are encoded apart from single texts
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Gathers concurrent requests into model batches; one worker, so the model runs one batch at a time."""

    def __init__(self, predictor: Predictor, max_batch_size: int, max_wait_ms: float) -> None:
        self.predictor = predictor
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._held: _Job | None = None  # a job that did not fit in the last batch: it opens the next one
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bertkit-predict")
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=True)

    async def predict(self, examples: list[Any], pairs: bool = False) -> list[dict]:
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(examples, pairs, future))
        return await future

    async def _collect(self) -> list[_Job]:
        """The next batch: the first job, then whatever arrives within max_wait while it fits in max_batch_size."""
        loop = asyncio.get_running_loop()
        first, self._held = self._held or await self._queue.get(), None
        jobs, size = [first], len(first.examples)
        deadline = loop.time() + self.max_wait_s
        while size < self.max_batch_size:
            try:
                if self._queue.empty():
                    job = await asyncio.wait_for(self._queue.get(), max(deadline - loop.time(), 0))
                else:
                    job = self._queue.get_nowait()
            except asyncio.TimeoutError:
                break
            if size + len(job.examples) > self.max_batch_size:
                self._held = job
                break
            jobs.append(job)
            size += len(job.examples)
        return jobs

    async def _run(self) -> None:
        while True:
            jobs = [job for job in await self._collect() if not job.future.done()]  # skip requests already gone
            for pairs in (False, True):
                group = [job for job in jobs if job.pairs == pairs]
                if group:
                    await self._predict(group)

    async def _predict(self, jobs: list[_Job]) -> None:
        """One model call for the jobs; if it fails, each job alone, so one request's bad input fails only it."""
        examples = [example for job in jobs for example in job.examples]
        try:
            predictions = await asyncio.get_running_loop().run_in_executor(self._executor, self.predictor.predict, examples)
        except Exception as exc:
            if len(jobs) > 1:
                for job in jobs:
                    await self._predict([job])
            elif not jobs[0].future.done():
                jobs[0].future.set_exception(exc)
            return
        start = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_result(predictions[start : start + len(job.examples)])
            start += len(job.examples)


def _check_length(name: str, index: int, text: str, limits: ServerLimits) -> None:
    if len(text) > limits.max_chars:
        raise HTTPException(413, f"{name}[{index}] has {len(text)} characters; the limit is {limits.max_chars} (--max-chars)")
    if not text.strip():
        raise HTTPException(422, f"{name}[{index}] is empty")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # JSON lets "\ud800" through; no tokenizer or UTF-8 output can take it
        raise HTTPException(422, f"{name}[{index}] has a lone surrogate ({text[exc.start]!r} at character {exc.start}); "
                                 "texts must be valid Unicode") from None


def _check_count(count: int, what: str, limits: ServerLimits) -> None:
    if count > limits.max_texts:
        raise HTTPException(413, f"{count} {what} in one request; the limit is {limits.max_texts} (--max-texts)")


def _examples(predictor: Predictor, request: PredictRequest, limits: ServerLimits) -> tuple[list[Any], bool]:
    """The request as the task's examples (and whether they are sentence pairs); HTTPException when it is not one."""
    task = predictor.task
    given = request.model_dump(exclude_none=True)
    if not given:
        raise HTTPException(422, f"the request is empty; this model ({task.name}) takes {task.request_help}")
    if not set(given) <= task.request_fields:
        raise HTTPException(422, f"this model ({task.name}) takes {task.request_help}, not {', '.join(sorted(given))}")

    def check(name: str, texts: list[str]) -> None:
        _check_count(len(texts), "items" if "items" in given else name, limits)
        for i, text in enumerate(texts):
            _check_length(name, i, text, limits)

    try:
        return task.from_request(given, check)
    except BertkitError as error:
        raise HTTPException(422, str(error)) from None


def _validation_message(exc: RequestValidationError) -> str:
    """Pydantic's errors on one line: `texts.0: Input should be a valid string; ...`."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"] if part != "body")
        where = "".join(c if c.isprintable() else repr(c)[1:-1] for c in where)  # a key may hold a line break
        message = error["msg"]
        if error.get("type") == "json_invalid":
            message = f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'decode error')})"
            where = ""
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def _health(predictor: Predictor, adapters: list[str] | None = None) -> HealthResponse:
    id2label = predictor.config.id2label or {}
    return HealthResponse(
        status="ok",
        model=str(predictor.model_dir),
        task=predictor.task.name,
        labels=[id2label[i] for i in range(len(id2label))] if predictor.task.labelled and id2label else None,
        pairs=bool(predictor.task.settings.get("text_pair_column")),
        backend=getattr(predictor, "backend", "torch"),
        adapters=adapters or [],
    )


_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_adapters(specs: list[str] | None) -> dict[str, str]:
    """`--adapter NAME=DIR` values -> {name: directory}; a name goes into a URL path, so it is a plain word."""
    adapters: dict[str, str] = {}
    for spec in specs or []:
        name, _, directory = spec.partition("=")
        if not _ADAPTER_NAME.match(name) or not directory:
            raise BertkitError(f"--adapter {spec!r}: give NAME=DIR, NAME of letters, digits, '_', '-' or '.'")
        if name in adapters:
            raise BertkitError(f"--adapter {name!r} is given twice")
        adapters[name] = directory
    return adapters


def create_app(predictor: Predictor | None, limits: ServerLimits | None = None,
               adapters: Mapping[str, Predictor] | None = None) -> FastAPI:
    """The HTTP app for one Predictor and any adapters beside it (by name); the micro-batching workers run while
    the app does (its lifespan). `predictor` None: a base model that is not fine-tuned serves its adapters only."""
    limits = limits or ServerLimits()
    adapters = dict(adapters or {})
    if predictor is None and not adapters:
        raise BertkitError("nothing to serve: give a fine-tuned model or adapters")
    if predictor is not None:
        health = _health(predictor, list(adapters))
    else:
        first = next(iter(adapters.values())).model
        health = HealthResponse(status="ok", model=str(first.bertkit_adapter["base_model"]), task=None, labels=None,
                                pairs=False, backend="torch", adapters=list(adapters))
    task = health.task or "adapters"
    state: dict[str, MicroBatcher] = {}
    adapter_batchers: dict[str, MicroBatcher] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if predictor is not None:
            state["batcher"] = MicroBatcher(predictor, limits.max_batch_size, limits.max_wait_ms)
            state["batcher"].start()
        for name, adapter in adapters.items():
            adapter_batchers[name] = MicroBatcher(adapter, limits.max_batch_size, limits.max_wait_ms)
            adapter_batchers[name].start()
        yield
        for batcher in [*state.values(), *adapter_batchers.values()]:
            await batcher.stop()
        state.clear()
        adapter_batchers.clear()

    app = FastAPI(title="bertkit", summary=f"a fine-tuned BERT ({task}) over HTTP", lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.mount(SWAGGER_URL, StaticFiles(directory=swagger_ui_path), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="bertkit API",
                                   swagger_js_url=f"{SWAGGER_URL}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{SWAGGER_URL}/swagger-ui.css",
                                   swagger_favicon_url=f"{SWAGGER_URL}/favicon-32x32.png")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(exc)}, status_code=422)

    @app.exception_handler(BertkitError)
    async def bertkit_error(request: Request, exc: BertkitError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(INDEX_HTML, media_type="text/html")

    @app.get("/health", response_model=HealthResponse)
    async def get_health() -> HealthResponse:
        """The model being served and its task: which request `/v1/predict` takes."""
        return health

    @app.post("/v1/predict", response_model=PredictResponse,
              responses={413: {"description": "too many texts, or a text too long"},
                         422: {"description": "a request the model's task cannot take"}})
    async def predict(request: PredictRequest = Body(openapi_examples=_EXAMPLES)) -> dict[str, Any]:
        """Predictions for the model's own task, one per text or item, each as a `bertkit predict` line."""
        if predictor is None:
            raise HTTPException(404, f"{health.model} is a base model, not fine-tuned for a task; POST to "
                                     f"/v1/adapters/{{name}}/predict for one of its adapters: {', '.join(adapters)}")
        examples, pairs = _examples(predictor, request, limits)
        return {"predictions": await state["batcher"].predict(examples, pairs)}

    @app.get("/v1/adapters", response_model=AdaptersResponse)
    async def get_adapters() -> AdaptersResponse:
        """The adapters served beside the model (`serve --adapter NAME=DIR`), by name."""
        return AdaptersResponse(adapters={name: _health(adapter) for name, adapter in adapters.items()})

    @app.post("/v1/adapters/{name}/predict", response_model=PredictResponse,
              responses={404: {"description": "no adapter of that name is served here"},
                         413: {"description": "too many texts, or a text too long"},
                         422: {"description": "a request the adapter's task cannot take"}})
    async def predict_with_adapter(name: str, request: PredictRequest = Body(openapi_examples=_EXAMPLES)
                                   ) -> dict[str, Any]:
        """Predictions of the adapter `name` (its own task), each as a `bertkit predict` line of its directory."""
        if name not in adapters:
            served = f"adapters here: {', '.join(adapters)}" if adapters else "this server has no adapters (--adapter)"
            raise HTTPException(404, f"no adapter {name!r}; {served}")
        examples, pairs = _examples(adapters[name], request, limits)
        return {"predictions": await adapter_batchers[name].predict(examples, pairs)}

    @app.post("/v1/embed", response_model=EmbedResponse,
              responses={413: {"description": "too many texts, or a text too long"},
                         422: {"description": "an empty text, or a backend without the encoder's vectors"}})
    async def embed(request: EmbedRequest) -> dict[str, Any]:
        """Sentence embeddings from the served model's encoder, as `bertkit embed` computes them."""
        from bertkit.embeddings import encode

        if predictor is None:
            raise HTTPException(404, f"{health.model} is served for its adapters only; /v1/embed needs a served model")
        if health.backend != "torch":
            raise HTTPException(422, "embeddings need the torch backend; the ONNX graph returns the task's outputs only")
        _check_count(len(request.texts), "texts", limits)
        for index, text in enumerate(request.texts):
            _check_length("texts", index, text, limits)
        vectors = await asyncio.to_thread(encode, predictor.model, predictor.tokenizer, request.texts,
                                          request.pooling, request.normalize, batch_size=limits.max_batch_size)
        return {"embeddings": vectors.tolist()}

    return app


def load_served(model_dir: str | os.PathLike, adapters: Mapping[str, str | os.PathLike] | None = None,
                batch_size: int = 32, backend: str = "torch", onnx_file: str | os.PathLike | None = None,
                fp32: bool = False) -> tuple[Predictor | None, dict[str, Predictor]]:
    """The Predictor of `model_dir` (None when it is a base model that only carries adapters) and one per
    adapter, all adapters on one shared copy of the base weights."""
    from bertkit.checkpoint import load_config, resolve_model_dir
    from bertkit.efficient import shared_base
    from bertkit.tasks import task_of

    if not adapters:
        return Predictor(model_dir, batch_size=batch_size, backend=backend, onnx_file=onnx_file, fp32=fp32), {}
    if backend != "torch":
        raise BertkitError("--adapter runs on the torch backend; leave out --backend onnx")
    config = load_config(resolve_model_dir(model_dir))
    try:
        task_of(config)
    except BertkitError:  # a bare encoder is served through its adapters only
        predictor = None
    else:
        predictor = Predictor(model_dir, batch_size=batch_size, fp32=fp32)
    with shared_base(model_dir):
        served = {name: Predictor(directory, batch_size=batch_size, fp32=fp32) for name, directory in adapters.items()}
    return predictor, served


def serve(model_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, limits: ServerLimits | None = None,
          threads: int | None = None, backend: str = "torch", onnx_file: str | os.PathLike | None = None,
          fp32: bool = False, adapters: Mapping[str, str | os.PathLike] | None = None) -> None:
    """Load the model and answer requests until interrupted. `backend` "onnx" runs DIR/model.onnx (or
    `onnx_file`) in ONNX Runtime, with the same thread count; `fp32` opts out of native bf16. `adapters`
    {name: directory} are served beside it, on its weights (see `load_served`)."""
    torch.set_num_threads(threads or os.cpu_count() or 1)  # before loading: ONNX Runtime sessions take it too
    limits = limits or ServerLimits()
    predictor, served = load_served(model_dir, adapters, limits.max_batch_size, backend, onnx_file, fp32)
    what = f"{predictor.model_dir} ({predictor.task.name}, {backend})" if predictor is not None else str(model_dir)
    if served:
        what += f" with adapters {', '.join(served)} at /v1/adapters/{{name}}/predict"
    print(f"serving {what}: web page http://{host}:{port}/, API docs http://{host}:{port}/docs", file=sys.stderr)
    uvicorn.run(create_app(predictor, limits, served), host=host, port=port, log_level="info")
