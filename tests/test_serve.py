"""The HTTP service: limits answered with JSON 413/422 (never 500), concurrent requests batched into
one model call, results equal to the `Classifier`'s own, and a real uvicorn process on 127.0.0.1
that serves and exits cleanly on SIGTERM (the load test: test_bench_serve.py)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

fastapi = pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
from fastapi.testclient import TestClient  # noqa: E402

from sdbert import SDBertConfig, SDBertForSequenceClassification  # noqa: E402
from sdbert.classifier import Classifier, InferenceSettings  # noqa: E402
from sdbert.data.wordpiece import train_wordpiece_tokenizer  # noqa: E402
from sdbert.errors import ConfigError  # noqa: E402
from sdbert.inference import batch_groups, predict_logits  # noqa: E402
from sdbert.serving.app import MicroBatcher, ServeSettings, create_app  # noqa: E402

LABELS = {0: "negative", 1: "positive"}
TEXTS = ["a wonderful film with great acting and a clever script", "a terrible boring movie, the worst plot",
         "the start was slow but the ending is beautiful", "never watch this again, predictable and long"] * 8


@pytest.fixture(scope="module")
def classifier():
    tokenizer = train_wordpiece_tokenizer(TEXTS, vocab_size=150, min_frequency=1)
    config = SDBertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=48, max_position_embeddings=512, block_size=16,
                          num_random_blocks=1, initializer_range=0.2, id2label=LABELS)
    torch.manual_seed(0)
    return Classifier(SDBertForSequenceClassification(config).eval(), tokenizer, InferenceSettings(max_length=512))


@pytest.fixture(scope="module")
def model_dir(classifier, tmp_path_factory):
    path = tmp_path_factory.mktemp("serve") / "student"
    classifier.save_pretrained(path)
    return path


@pytest.fixture
def client(classifier):
    settings = ServeSettings(max_texts=4, max_chars=2000, max_wait_ms=2)
    with TestClient(create_app(classifier, settings, name="student")) as c:
        yield c


# --- batching helpers -------------------------------------------------------------------------------


def test_batch_groups_keep_one_block_count_per_batch():
    lengths = [5, 40, 17, 16, 33, 200, 15, 48]
    groups = batch_groups(lengths, batch_size=2, block_size=16)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        assert len(group) <= 2 and len({-(-lengths[i] // 16) for i in group}) == 1


def test_a_texts_logits_do_not_depend_on_its_batch(classifier):
    """Texts of other lengths in the same call leave a block-sparse model's logits unchanged."""
    from sdbert.data.tokenization import encode

    long_text = " ".join(TEXTS)  # past the dense fallback (112 tokens): the sparse pattern is in play
    ids = encode(classifier.tokenizer, [long_text, TEXTS[0], long_text[:300]], 512, "head+tail")
    together = predict_logits(classifier.model, ids, batch_size=8)
    alone = torch.cat([predict_logits(classifier.model, [x]) for x in ids])
    assert (together - alone).abs().max() < 1e-5


def test_micro_batcher_merges_concurrent_requests():
    calls = []

    def fn(texts):
        calls.append(list(texts))
        time.sleep(0.02)
        return [t.upper() for t in texts]

    async def main():
        batcher = MicroBatcher(fn, max_batch_texts=64, max_wait_ms=20)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit([f"t{i}", f"u{i}"]) for i in range(10)))
        await batcher.stop()
        return results, batcher.stats

    results, stats = asyncio.run(main())
    assert results == [[f"T{i}", f"U{i}"] for i in range(10)]  # each request gets its own slice, in order
    assert stats["requests"] == 10 and stats["batches"] == len(calls) < 10
    assert stats["max_requests_per_batch"] > 1


def test_micro_batcher_reports_model_errors_and_keeps_serving():
    def fn(texts):
        if "boom" in texts:
            raise RuntimeError("boom")
        return texts

    async def main():
        batcher = MicroBatcher(fn, max_wait_ms=0)
        await batcher.start()
        with pytest.raises(RuntimeError):
            await batcher.submit(["boom"])
        ok = await batcher.submit(["fine"])
        await batcher.stop()
        return ok

    assert asyncio.run(main()) == ["fine"]


def test_settings_are_validated():
    with pytest.raises(ConfigError):
        ServeSettings(max_texts=0)


# --- the app, in process ----------------------------------------------------------------------------


def test_classify_returns_label_score_and_probabilities(client, classifier):
    response = client.post("/v1/classify", json={"texts": TEXTS[:3]})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "student" and len(body["results"]) == 3
    for got, expected in zip(body["results"], classifier(TEXTS[:3]), strict=True):
        assert got["label"] == expected["label"] and set(got["probabilities"]) == {"negative", "positive"}
        assert abs(got["score"] - expected["score"]) < 1e-5
        assert abs(sum(got["probabilities"].values()) - 1) < 1e-4


def test_health_and_model_description(client, classifier):
    assert client.get("/healthz").json() == {"status": "ok"}
    info = client.get("/v1/model").json()
    assert info["labels"] == ["negative", "positive"] and info["parameters"] == classifier.model.num_parameters()
    assert info["backend"] == "torch" and info["config"]["attention_type"] == "block_sparse"
    assert info["limits"]["max_texts"] == 4 and info["max_length"] == 512


@pytest.mark.parametrize("body, status, words", [
    ({"texts": ["ok"] * 5}, 413, "5 texts"),
    ({"texts": ["x" * 2001]}, 413, "2001 characters"),
    ({"texts": []}, 422, "empty"),
    ({"texts": ["fine", "   "]}, 422, "text 1 is empty"),
    ({"texts": "not a list"}, 422, "invalid request"),
    ({"texts": [1, 2]}, 422, "invalid request"),
    ({"text": ["typo"]}, 422, "invalid request"),
])
def test_limits_and_bad_requests_are_json_errors(client, body, status, words):
    response = client.post("/v1/classify", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == status and words in error["message"]


def test_malformed_json_and_oversized_body(client):
    response = client.post("/v1/classify", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and "malformed JSON at character 1" in response.json()["error"]["message"]
    response = client.post("/v1/classify", content=b'{"texts": ["fine"]}', headers={"content-type": "text/plain"})
    assert response.status_code == 422 and "Content-Type: application/json" in response.json()["error"]["message"]
    limit = ServeSettings(max_texts=4, max_chars=2000).max_body_bytes
    huge = b'{"texts": ["' + b"a" * limit + b'"]}'
    response = client.post("/v1/classify", content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "limit" in response.json()["error"]["message"]

    def chunks():  # no content-length: the limit applies while the body is read
        yield b'{"texts": ["'
        for _ in range(limit // 65536 + 2):
            yield b"a" * 65536
        yield b'"]}'

    response = client.post("/v1/classify", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == 413


def test_full_queue_is_503():
    from sdbert.serving.app import Busy

    async def main():
        batcher = MicroBatcher(lambda texts: (time.sleep(0.2), texts)[1], max_wait_ms=0, max_queue=1)
        await batcher.start()
        first = asyncio.create_task(batcher.submit(["a"]))
        await asyncio.sleep(0.05)  # the worker is busy with the first request
        second = asyncio.create_task(batcher.submit(["b"]))  # waits in the queue
        await asyncio.sleep(0)
        with pytest.raises(Busy):
            await batcher.submit(["c"])
        results = await asyncio.gather(first, second)
        await batcher.stop()
        return results

    assert asyncio.run(main()) == [["a"], ["b"]]


class _SlowClassifier:
    """A classifier stand-in whose model call takes `seconds` and fails on the text "boom"."""

    def __init__(self, real, seconds: float):
        self.real, self.seconds, self.calls = real, seconds, []

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __call__(self, texts, **kwargs):
        self.calls.append(list(texts))
        time.sleep(self.seconds)
        if "boom" in texts:
            raise RuntimeError("this text breaks the model")
        return self.real(texts, **kwargs)


def _burst(app, bodies, gap: float = 0.05):
    """POST the bodies to the app concurrently (each `gap` s after the last); the responses, in order."""
    async def main():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # a 500, as a real server sends
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            async def post(i, body):
                await asyncio.sleep(i * gap)
                return await c.post("/v1/classify", json=body)
            return await asyncio.gather(*(post(i, b) for i, b in enumerate(bodies)))
    return asyncio.run(main())


def test_requests_beyond_the_concurrency_cap_are_503_before_their_body_is_read(classifier):
    app = create_app(_SlowClassifier(classifier, 0.5), ServeSettings(max_concurrent=1, max_wait_ms=0))
    first, second = _burst(app, [{"texts": ["fine"]}, {"texts": ["also fine"]}])
    assert first.status_code == 200
    assert second.status_code == 503 and "1 requests in flight" in second.json()["error"]["message"]
    assert second.headers["retry-after"] == "1"


def test_one_failing_text_fails_only_its_own_request(classifier):
    slow = _SlowClassifier(classifier, 0.05)
    app = create_app(slow, ServeSettings(max_wait_ms=200))  # both requests join one model call
    good, bad = _burst(app, [{"texts": ["fine"]}, {"texts": ["boom"]}], gap=0.01)
    assert good.status_code == 200 and good.json()["results"][0]["label"] in LABELS.values()
    assert bad.status_code == 500
    assert slow.calls[0] == ["fine", "boom"] and ["fine"] in slow.calls[1:]  # retried one by one


def test_a_request_that_waits_too_long_is_504(classifier):
    app = create_app(_SlowClassifier(classifier, 0.5), ServeSettings(request_timeout_s=0.1, max_wait_ms=0))
    (response,) = _burst(app, [{"texts": ["fine"]}])
    assert response.status_code == 504 and "no answer within 0.1 s" in response.json()["error"]["message"]


def test_health_is_503_once_draining_and_model_info_has_no_server_paths(classifier, tmp_path):
    classifier.model.config.init_checkpoint = str(tmp_path / "secret" / "all-MiniLM-L6-v2")
    app = create_app(classifier, ServeSettings())
    with TestClient(app) as c:
        assert c.get("/healthz").status_code == 200
        info = c.get("/v1/model").json()
        assert info["config"]["init_checkpoint"] == "all-MiniLM-L6-v2" and str(tmp_path) not in json.dumps(info)
        app.state.draining = True  # what SIGTERM sets, before in-flight requests finish
        assert c.get("/healthz").status_code == 503
    classifier.model.config.init_checkpoint = None


# --- a real uvicorn process ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(model_dir):
    from bench_serve import running_server

    # fp32: the answers are compared with an fp32 classifier to 1e-5 (auto may pick bf16 on this CPU)
    with running_server(model_dir, server_args=["--max-texts", "8", "--threads", "1", "--precision", "fp32"],
                        startup_timeout=120) as url:
        yield url


def test_real_server_classifies_and_batches_concurrent_requests(server, classifier):
    assert server.startswith("http://127.0.0.1:")

    async def burst():
        async with httpx.AsyncClient(base_url=server, timeout=60) as c:
            return await asyncio.gather(*(c.post("/v1/classify", json={"texts": [t]}) for t in TEXTS[:16]))

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 16
    expected = classifier(TEXTS[:16])
    for response, want in zip(responses, expected, strict=True):
        got = response.json()["results"][0]
        assert got["label"] == want["label"] and abs(got["score"] - want["score"]) < 1e-5
    batching = httpx.get(f"{server}/v1/model").json()["batching"]
    assert batching["max_requests_per_batch"] > 1  # concurrent requests shared a model call
    assert httpx.get(f"{server}/v1/model").json()["precision"] == "fp32"
    too_many = httpx.post(f"{server}/v1/classify", json={"texts": ["a"] * 9})
    assert too_many.status_code == 413 and too_many.json()["error"]["code"] == 413


def _wait_until_healthy(proc: subprocess.Popen, url: str, timeout: float = 120.0) -> None:
    """Poll `/healthz` of a server started as `proc` until it answers 200 (its output if it exits first)."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "the server exited"
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)


def test_sigterm_stops_the_server_gracefully(model_dir):
    """An in-flight request still gets its answer after SIGTERM; the process then exits with 0."""
    from bench_serve import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sdbert", "serve", "--model", str(model_dir), "--port", str(port),
                             "--max-wait-ms", "300"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_healthy(proc, url)

        async def request_then_terminate():
            async with httpx.AsyncClient(base_url=url, timeout=60) as c:
                pending = asyncio.create_task(c.post("/v1/classify", json={"texts": [TEXTS[0]]}))
                await asyncio.sleep(0.1)  # the request now waits in the batcher (max_wait 300 ms)
                proc.send_signal(signal.SIGTERM)
                return await pending

        response = asyncio.run(request_then_terminate())
        assert response.status_code == 200 and response.json()["results"][0]["label"] in LABELS.values()
        assert proc.wait(timeout=60) == 0
        log = proc.stdout.read()
        assert "Shutting down" in log or "shutdown" in log.lower()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_cli_errors_are_one_line(tmp_path, capsys):
    from sdbert.cli import main

    assert main(["serve", "--model", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not exist" in err


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's peak RSS from /proc")
def test_concurrent_oversized_requests_leave_memory_bounded_and_good_requests_answered(model_dir):
    """50 concurrent bodies of ~7 MB (64 texts of escaped non-ASCII, under the body limit): with 2 requests
    in flight at most, the rest are refused before their bodies are read, so the server's peak memory grows
    by a few bodies, not by 50; every good request afterwards is answered."""
    from bench_serve import free_port

    port, cap = free_port(), 2
    proc = subprocess.Popen([sys.executable, "-m", "sdbert", "serve", "--model", str(model_dir), "--port", str(port),
                             "--max-chars", "20000", "--max-concurrent", str(cap), "--threads", "1",
                             "--precision", "fp32"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(proc, url)
        body = json.dumps({"texts": ["\u00e9" * 19_500] * 64}).encode()  # ensure_ascii: 6 bytes per character
        assert 7_000_000 < len(body) < ServeSettings(max_chars=20000).max_body_bytes
        before = _peak_rss_mb(proc.pid)

        async def burst():
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                async def send():
                    try:
                        return (await client.post("/v1/classify", content=body,
                                                  headers={"content-type": "application/json"})).status_code
                    except httpx.TransportError:  # refused and closed before the whole body was sent
                        return "closed"
                return await asyncio.gather(*(send() for _ in range(50)))

        statuses = asyncio.run(burst())
        assert set(statuses) <= {200, 503, "closed"} and statuses.count(200) >= 1 and 200 in statuses
        grown = _peak_rss_mb(proc.pid) - before
        assert grown < 60 * cap, f"peak RSS grew by {grown:.0f} MB"  # one body in flight costs tens of MB, not 50x
        for text in TEXTS[:4]:
            assert httpx.post(f"{url}/v1/classify", json={"texts": [text]}, timeout=60).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
