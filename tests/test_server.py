"""`bertkit serve` through a real HTTP client: every task, the limits, bad input, micro-batching, the web page."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn

from bertkit.cli import main
from bertkit.data.classify import ClassifyExample
from bertkit.data.qa import QAExample
from bertkit.export import export_onnx
from bertkit.inference import Predictor
from bertkit.server import ServerLimits, create_app
from tests.test_finetune_classify import NEGATIVE, POSITIVE, write_csv
from tests.test_finetune_ner import CHINESE, ENGLISH, write_conll
from tests.test_finetune_qa import CONTEXTS, squad

LIMITS = ServerLimits(max_batch_size=8, max_wait_ms=20, max_texts=4, max_chars=200)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class CountingPredictor(Predictor):
    """A Predictor that records how many examples each model call got, to see requests gathered into batches."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.batch_sizes: list[int] = []

    def predict(self, examples):
        self.batch_sizes.append(len(examples))
        return super().predict(examples)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a machine shared with benchmarks: more threads only wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _finetune(task: str, tiny_model_dir: Path, train: Path, out: Path, *flags: str) -> Path:
    assert main(["finetune", task, "--model", str(tiny_model_dir), "--train", str(train), "--out", str(out),
                 "--batch-size", "4", "--lr", "5e-3", *flags]) == 0
    return out


@pytest.fixture(scope="module")
def classify_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("serve_classify")
    train = write_csv(tmp / "train.csv", ([(t, "pos") for t in POSITIVE] + [(t, "neg") for t in NEGATIVE]) * 3)
    return _finetune("classify", tiny_model_dir, train, tmp / "model", "--epochs", "6", "--seed", "1")


@pytest.fixture(scope="module")
def pairs_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("serve_pairs")
    rows = [(a, b, "same" if (a in POSITIVE) == (b in POSITIVE) else "other") for a in POSITIVE[:3] + NEGATIVE[:3]
            for b in POSITIVE[3:] + NEGATIVE[3:]]
    train = tmp / "train.csv"
    train.write_text("text,pair,label\n" + "".join(f"{a},{b},{label}\n" for a, b, label in rows), encoding="utf-8")
    return _finetune("classify", tiny_model_dir, train, tmp / "model", "--epochs", "1", "--text-pair-column", "pair")


@pytest.fixture(scope="module")
def ner_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("serve_ner")
    write_conll(tmp / "train.conll", (ENGLISH + CHINESE) * 6)
    return _finetune("ner", tiny_model_dir, tmp / "train.conll", tmp / "model", "--epochs", "12")


@pytest.fixture(scope="module")
def qa_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("serve_qa")
    (tmp / "train.json").write_text(json.dumps(squad()), encoding="utf-8")
    return _finetune("qa", tiny_model_dir, tmp / "train.json", tmp / "model", "--epochs", "1",
                     "--max-seq-len", "24", "--doc-stride", "6")


@contextmanager
def running(predictor: Predictor, limits: ServerLimits = LIMITS) -> Iterator[httpx.Client]:
    """The app under uvicorn in a background thread, on a free loopback port; a client pointed at it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(predictor, limits), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def classify_server(classify_dir: Path) -> Iterator[tuple[httpx.Client, CountingPredictor]]:
    predictor = CountingPredictor(classify_dir, batch_size=LIMITS.max_batch_size)
    with running(predictor) as client:
        yield client, predictor


@pytest.fixture(scope="module")
def ner_server(ner_dir: Path) -> Iterator[httpx.Client]:
    with running(Predictor(ner_dir, batch_size=LIMITS.max_batch_size)) as client:
        yield client


@pytest.fixture(scope="module")
def qa_server(qa_dir: Path) -> Iterator[httpx.Client]:
    with running(Predictor(qa_dir, batch_size=LIMITS.max_batch_size)) as client:
        yield client


def predictions(client: httpx.Client, payload: dict) -> list[dict]:
    response = client.post("/v1/predict", json=payload)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"predictions"}
    return response.json()["predictions"]


def assert_close(served, expected) -> None:
    """Same labels, spans and texts; scores equal up to float32 rounding (a text batched with others may be
    padded to another length, which changes the last bits of its logits)."""
    if isinstance(expected, float):
        assert served == pytest.approx(expected, rel=1e-5, abs=1e-6)
    elif isinstance(expected, dict):
        assert isinstance(served, dict) and served.keys() == expected.keys()
        for key in expected:
            assert_close(served[key], expected[key])
    elif isinstance(expected, list):
        assert isinstance(served, list) and len(served) == len(expected)
        for a, b in zip(served, expected):
            assert_close(a, b)
    else:
        assert served == expected


def test_health_docs_and_page(classify_server, qa_server, classify_dir):
    client, _ = classify_server
    health = client.get("/health").json()
    assert health == {"status": "ok", "model": str(classify_dir), "task": "classify", "labels": ["neg", "pos"],
                      "pairs": False, "backend": "torch", "adapters": []}
    assert qa_server.get("/health").json()["labels"] is None
    schema = client.get("/openapi.json").json()
    assert "/v1/predict" in schema["paths"] and "/health" in schema["paths"]
    assert {"texts", "text_pairs", "items", "question", "context"} <= set(schema["components"]["schemas"]["PredictRequest"]["properties"])
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html") and "v1/predict" in page.text


def test_classify_same_as_predictor(classify_server, classify_dir):
    client, _ = classify_server
    direct = Predictor(classify_dir)
    texts = ["great film", "awful plot", "i love the story"]
    served = predictions(client, {"texts": texts})
    assert served == direct.predict(direct.from_texts(texts))
    assert [p["label"] for p in served] == ["pos", "neg", "pos"]
    for p in served:
        assert set(p) == {"label", "score", "scores"} and p["score"] == max(p["scores"].values())
        assert sum(p["scores"].values()) == pytest.approx(1)


def test_pairs_same_as_predictor(pairs_dir, classify_server):
    direct = Predictor(pairs_dir)
    texts, pairs = ["great film", "awful plot"], ["good movie", "bad movie"]
    with running(Predictor(pairs_dir, batch_size=LIMITS.max_batch_size)) as client:
        assert client.get("/health").json()["pairs"] is True
        served = predictions(client, {"texts": texts, "text_pairs": pairs})
        response = client.post("/v1/predict", json={"texts": texts, "text_pairs": pairs[:1]})
        assert response.status_code == 422 and "one pair per text" in response.json()["detail"]
        response = client.post("/v1/predict", json={"texts": texts[:1], "text_pairs": ["x" * 201]})
        assert response.status_code == 413 and "text_pairs[0]" in response.json()["detail"]
    assert served == direct.predict([ClassifyExample(t, p, None, i) for i, (t, p) in enumerate(zip(texts, pairs), 1)])
    single, _ = classify_server  # a classifier of single texts refuses pairs rather than use them
    response = single.post("/v1/predict", json={"texts": texts, "text_pairs": pairs})
    assert response.status_code == 422 and "takes no text_pairs" in response.json()["detail"]


def test_docs_work_offline(classify_server):
    """/docs loads Swagger UI from this server, not from a CDN: every asset it names is local and served."""
    client, _ = classify_server
    page = client.get("/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(assets) == 3 and all(url.startswith("/") and not url.startswith("//") for url in assets), assets
    assert "http" not in page.text.lower()
    for url in assets:
        response = client.get(url)
        assert response.status_code == 200 and len(response.content) > 500, url
    assert "SwaggerUIBundle" in client.get(assets[2] if assets[2].endswith(".js") else assets[0]).text


def test_ner_same_as_predictor(ner_server, ner_dir):
    direct = Predictor(ner_dir)
    texts = ["john smith lives in paris .", "我在北京大学工作", "John  works at Google."]
    served = predictions(ner_server, {"texts": texts})
    assert served == direct.predict(direct.from_texts(texts))
    assert {(e["type"], e["text"]) for e in served[0]["entities"]} == {("PER", "john smith"), ("LOC", "paris")}
    for text, prediction in zip(texts, served):
        for entity in prediction["entities"]:
            assert set(entity) == {"type", "start", "end", "text", "score"}
            assert text[entity["start"]:entity["end"]] == entity["text"]


def test_qa_same_as_predictor(qa_server, qa_dir):
    direct = Predictor(qa_dir)
    items = [{"question": q, "context": context} for context, questions in CONTEXTS for q, _ in questions]
    served = predictions(qa_server, {"items": items})
    expected = direct.predict([QAExample(str(i), it["question"], it["context"], []) for i, it in enumerate(items)])
    assert served == expected
    for item, prediction in zip(items, served):
        assert set(prediction) == {"answer", "start", "end", "score"}
        assert item["context"][prediction["start"]:prediction["end"]] == prediction["answer"]
    assert predictions(qa_server, items[1]) == expected[1:2]  # one item without the list


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"texts": []}, 422, "at least 1"),
    ({"texts": "great film"}, 422, "valid list"),
    ({"texts": [1, 2]}, 422, "valid string"),
    ({"texts": None}, 422, "takes"),
    ({"text": ["great film"]}, 422, "text: Extra inputs are not permitted"),
    ({"\n": None}, 422, "\\n: Extra inputs are not permitted"),  # a key with a line break, found by test_fuzz
    ({}, 422, "empty"),
    ([["great film"]], 422, "valid dict"),
    ({"texts": ["   "]}, 422, "texts[0] is empty"),
    ({"texts": ["great film", ""]}, 422, "texts[1] is empty"),  # a request answers whole or not at all
    ({"texts": ["great film", "x" * 201]}, 413, "texts[1] has 201 characters; the limit is 200"),
    ({"texts": ["great film"] * 5}, 413, "5 texts in one request; the limit is 4"),
    ({"texts": ["good"], "text_pairs": ["fun"]}, 422, "takes no text_pairs"),
    (b'{"texts": ["caf\\ud800e"]}', 422, "texts[0] has a lone surrogate"),  # valid JSON, not valid Unicode
    (b'{"texts": ["ok", "\\udfff"]}', 422, "texts[1] has a lone surrogate"),
    ({"items": [{"question": "who ?", "context": "john"}]}, 422, "this model (classify) takes"),
    ({"question": "who ?", "context": "john"}, 422, "this model (classify) takes"),
    (b'{"texts": ["great film"', 422, "not valid JSON"),
    (b'{"texts": ["caf\xe9"]}', 400, ""),  # Latin-1, not UTF-8
    (b"\xff\xfe\x00", 400, ""),
    (b'{"texts": ["' + b"a" * 20_000 + b'"]}', 413, "the request body has"),
], ids=lambda value: repr(value)[:40])
def test_bad_input_is_a_client_error(classify_server, body, status, message):
    client, _ = classify_server
    if isinstance(body, bytes):
        response = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    else:
        response = client.post("/v1/predict", json=body)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and message in detail, detail
    assert response.headers.get("connection") != "close"  # a client error keeps the keep-alive connection
    assert client.get("/health").status_code == 200  # and the server goes on


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_body_that_is_not_declared_json(classify_server, content_type):
    client, _ = classify_server
    response = client.post("/v1/predict", content=b'{"texts": ["great"]}', headers={"content-type": content_type})
    assert response.status_code == 415, response.text
    assert f"not {content_type}" in response.json()["detail"]
    ok = {"content-type": "application/json; charset=utf-8"}
    assert client.post("/v1/predict", content=b'{"texts": ["great"]}', headers=ok).status_code == 200
    assert client.post("/v1/predict", content=b"").status_code == 422  # no content type: read as JSON
    assert client.get("/v1/predict").status_code == 405


def test_chunked_body_is_held_to_the_limit(classify_server):
    """A body with no Content-Length is counted as it streams in: over the limit it is refused (413), not read whole."""
    client, _ = classify_server

    def chunks(count: int):
        yield b'{"texts": ["'
        for _ in range(count):
            yield b"a" * 1000
        yield b'"]}'

    response = client.post("/v1/predict", content=chunks(8), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413 and "8000 characters" in response.json()["detail"]  # under the body limit
    assert LIMITS.max_body_bytes < 20_000
    response = client.post("/v1/predict", content=chunks(20), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["detail"] == (f"the request body has more than {LIMITS.max_body_bytes} bytes; "
                                         f"the limit is {LIMITS.max_body_bytes}")
    assert predictions(client, {"texts": ["great"]})  # the server goes on
    short = client.post("/v1/predict", content=iter([b'{"texts": ', b'["great film"]}']),
                        headers={"content-type": "application/json"})
    assert short.status_code == 200 and len(short.json()["predictions"]) == 1


def test_wrong_task_payload(ner_server, qa_server):
    response = qa_server.post("/v1/predict", json={"texts": ["john lives in paris"]})
    assert response.status_code == 422 and "this model (qa) takes" in response.json()["detail"]
    response = qa_server.post("/v1/predict", json={"question": "where ?"})
    assert response.status_code == 422 and "both" in response.json()["detail"]
    response = qa_server.post("/v1/predict", json={"items": [{"question": "where ?", "context": " "}]})
    assert response.status_code == 422 and "context[0] is empty" in response.json()["detail"]
    response = qa_server.post("/v1/predict", json={"items": [{"question": "where ?"}]})
    assert response.status_code == 422 and "items.0.context" in response.json()["detail"]
    response = ner_server.post("/v1/predict", json={"texts": ["john"], "text_pairs": ["paris"]})
    assert response.status_code == 422 and "this model (ner) takes" in response.json()["detail"]


def test_concurrent_requests_are_batched_and_answer_as_sequential_ones(classify_server):
    client, predictor = classify_server
    words = (POSITIVE + NEGATIVE) * 2
    requests = [{"texts": words[i : i + 1 + i % 3]} for i in range(16)]  # 1 to 3 texts each
    sequential = [predictions(client, request) for request in requests]
    predictor.batch_sizes.clear()
    barrier = threading.Barrier(len(requests))

    def send(request: dict) -> list[dict]:
        barrier.wait()
        return predictions(client, request)

    with ThreadPoolExecutor(len(requests)) as pool:
        concurrent = list(pool.map(send, requests))
    assert_close(concurrent, sequential)
    assert len(predictor.batch_sizes) < len(requests), "concurrent requests should share model batches"
    assert max(predictor.batch_sizes) <= LIMITS.max_batch_size


def test_bad_request_in_a_batch_fails_alone(qa_server, qa_dir):
    """A question too long for the model's 24-token windows fails inside the model call: the requests batched
    with it still get their answers."""
    context = CONTEXTS[0][0]
    good = {"question": "where does john smith live ?", "context": context}
    bad = {"question": "who " * 30, "context": context}
    expected = predictions(qa_server, good)
    barrier = threading.Barrier(8)

    def send(payload: dict) -> httpx.Response:
        barrier.wait()
        return qa_server.post("/v1/predict", json=payload)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(send, [bad if i % 4 == 0 else good for i in range(8)]))
    for i, response in enumerate(responses):
        if i % 4 == 0:
            assert response.status_code == 422 and "leaves no room for the context" in response.json()["detail"]
        else:
            assert response.status_code == 200
            assert_close(response.json()["predictions"], expected)


def test_onnx_backend_serves_what_torch_serves(classify_dir, tmp_path):
    graph = tmp_path / "model.onnx"
    export_onnx(classify_dir, graph)
    texts = ["great film", "the actor was awful and the plot was boring", "a"]
    direct = Predictor(classify_dir)
    expected = direct.predict(direct.from_texts(texts))
    with running(Predictor(classify_dir, batch_size=LIMITS.max_batch_size, backend="onnx", onnx_file=graph)) as client:
        assert client.get("/health").json()["backend"] == "onnx"
        served = predictions(client, {"texts": texts})
    assert [p["label"] for p in served] == [p["label"] for p in expected]
    for a, b in zip(served, expected):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-4)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_cli_serve(classify_dir, backend, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    graph = ["--backend", "onnx", "--onnx", str(export_onnx(classify_dir, tmp_path / "model.onnx").path)] if backend == "onnx" else []
    process = subprocess.Popen(
        [sys.executable, "-m", "bertkit.cli", "serve", "--model", str(classify_dir), "--port", str(port), "--threads", "1",
         "--max-texts", "2", *graph],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                health = httpx.get(f"{url}/health")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "bertkit serve did not answer within 60 s"
                time.sleep(0.2)
        assert health.json()["task"] == "classify" and health.json()["backend"] == backend
        served = httpx.post(f"{url}/v1/predict", json={"texts": ["great film"]}).json()["predictions"]
        direct = Predictor(classify_dir)
        expected = direct.predict(direct.from_texts(["great film"]))
        assert served[0]["label"] == expected[0]["label"]
        assert served[0]["scores"] == pytest.approx(expected[0]["scores"], abs=1e-4)
        assert httpx.post(f"{url}/v1/predict", json={"texts": ["a", "b", "c"]}).status_code == 413
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_cli_serve_bad_model(tmp_path, capsys):
    from tests.conftest import run_cli

    code, _, err = run_cli(["serve", "--model", str(tmp_path / "missing")], capsys)
    assert code == 2 and err.count("\n") == 1, err


@contextmanager
def browser_page(client: httpx.Client):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 640})
            page.goto(str(client.base_url) + "/")
            yield page
        finally:
            browser.close()


def save_screenshot(page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0
    if os.environ.get("BERTKIT_SCREENSHOT_DIR"):
        Path(os.environ["BERTKIT_SCREENSHOT_DIR"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, os.environ["BERTKIT_SCREENSHOT_DIR"])


def test_page_classify(classify_server, tmp_path):
    client, _ = classify_server
    with browser_page(client) as page:
        page.wait_for_selector("#form:not([hidden])")
        assert page.is_hidden("#question") and page.is_hidden("#text-pair")
        page.fill("#text", "i love the plot")
        page.click("#run")
        page.wait_for_selector(".bar")
        assert sorted(page.locator(".bar").evaluate_all("rows => rows.map(r => r.dataset.label)")) == ["neg", "pos"]
        assert page.locator(".bar.top .bar-label").inner_text() == "pos"
        assert page.is_hidden("#error")
        save_screenshot(page, tmp_path / "server_page_classify.png")

        page.fill("#text", "x" * 201)  # an error is shown, not swallowed
        page.click("#run")
        page.wait_for_selector("#error:not([hidden])")
        assert "limit is 200" in page.inner_text("#error")


def test_page_ner(ner_server, tmp_path):
    with browser_page(ner_server) as page:
        page.wait_for_selector("#form:not([hidden])")
        page.fill("#text", "john smith lives in paris .")
        page.keyboard.press("Control+Enter")
        page.wait_for_selector("mark.entity")
        marks = page.locator("mark.entity")
        assert marks.count() == 2 and marks.first.is_visible()
        shown = marks.evaluate_all("marks => marks.map(m => [m.firstChild.textContent, m.querySelector('.tag').textContent])")
        assert shown == [["john smith", "PER"], ["paris", "LOC"]]
        assert page.inner_text("#result-body .marked").startswith("john smith")
        save_screenshot(page, tmp_path / "server_page_ner.png")


def test_page_qa(qa_server, tmp_path):
    context = CONTEXTS[0][0]
    with browser_page(qa_server) as page:
        page.wait_for_selector("#form:not([hidden])")
        assert page.is_hidden("#text")
        page.fill("#question", "where does john smith live ?")
        page.fill("#context", context)
        page.click("#run")
        page.wait_for_selector("#result:not([hidden])")
        answer = predictions(qa_server, {"question": "where does john smith live ?", "context": context})[0]["answer"]
        assert page.inner_text("mark.answer") == answer
        save_screenshot(page, tmp_path / "server_page_qa.png")


def test_embed_endpoint_same_as_encode(classify_server):
    from bertkit.embeddings import encode

    client, predictor = classify_server
    texts = ["good movie", "the plot was a boring story"]
    response = client.post("/v1/embed", json={"texts": texts, "pooling": "max", "normalize": False})
    assert response.status_code == 200, response.text
    expected = encode(predictor.model, predictor.tokenizer, texts, pooling="max", normalize=False)
    assert_close(response.json()["embeddings"], expected.tolist())
    assert client.post("/v1/embed", json={"texts": [""]}).status_code == 422
    assert client.post("/v1/embed", json={"texts": ["good"], "pooling": "sum"}).status_code == 422
