"""The service for ops: bearer-token auth (401 without the key or with a wrong one, /healthz open), the
Prometheus metrics at /metrics, one JSON access-log line per request, and the refusal to listen beyond
this machine without a key. In process (TestClient); the real server with a key: test_bench_serve.py."""

from __future__ import annotations

import json
import logging

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")
from fastapi.testclient import TestClient  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from sdbert.classifier import Classifier, InferenceSettings  # noqa: E402
from sdbert.commands.serve import read_api_key  # noqa: E402
from sdbert.errors import ConfigError  # noqa: E402
from sdbert.serving.app import ServeSettings, check_bind, create_app  # noqa: E402

KEY = "s3cret-Key_0123456789"
TEXTS = ["a wonderful film with great acting and a clever script", "a terrible boring movie, the worst plot"]


@pytest.fixture
def model(tiny_model, tiny_tokenizer):
    m = tiny_model(vocab_size=tiny_tokenizer.get_vocab_size(), id2label={0: "negative", 1: "positive"})
    return Classifier(m, tiny_tokenizer, InferenceSettings(max_length=256))


@pytest.fixture
def open_client(model):
    with TestClient(create_app(model, ServeSettings(max_wait_ms=1), name="student")) as c:
        yield c


@pytest.fixture
def locked_client(model):
    with TestClient(create_app(model, ServeSettings(max_wait_ms=1), name="student", api_key=KEY)) as c:
        yield c


def _call(client, route: str, headers: dict | None = None):
    if route == "/v1/classify":
        return client.post(route, json={"texts": TEXTS[:1]}, headers=headers)
    return client.get(route, headers=headers)


# --- auth -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/v1/classify", "/v1/model", "/metrics"])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key", f"Bearer {KEY}x", f"Basic {KEY}", KEY])
def test_a_missing_or_wrong_key_is_401_with_the_json_error(locked_client, route, authorization):
    response = _call(locked_client, route, {"Authorization": authorization} if authorization else None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == 401 and "API key" in response.json()["error"]["message"]


@pytest.mark.parametrize("route", ["/v1/classify", "/v1/model", "/metrics"])
def test_the_key_opens_every_route(locked_client, route):
    response = _call(locked_client, route, {"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 200
    assert _call(locked_client, route, {"Authorization": f"bearer  {KEY}"}).status_code == 200  # scheme: any case


def test_healthz_stays_open_and_a_keyless_body_is_never_read(locked_client):
    assert locked_client.get("/healthz").json() == {"status": "ok"}
    # A body above the size limit: refused for the key (401), not for its size (413), so unread.
    huge = b"x" * (ServeSettings().max_body_bytes + 1)
    assert locked_client.post("/v1/classify", content=huge).status_code == 401
    assert locked_client.get("/no-such-route").status_code == 401  # no route list for strangers


def test_without_a_key_the_routes_stay_open(open_client):
    assert open_client.post("/v1/classify", json={"texts": TEXTS}).status_code == 200
    assert open_client.get("/no-such-route").status_code == 404


# --- metrics ----------------------------------------------------------------------------------------


def _metrics(client, headers=None) -> dict:
    """{sample name: [(labels, value)]} of /metrics, parsed by Prometheus' own parser."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples: dict = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def _value(samples: dict, name: str, **labels) -> float | None:
    found = [v for got, v in samples.get(name, []) if all(got.get(k) == w for k, w in labels.items())]
    return found[0] if found else None


def test_metrics_count_requests_errors_latency_and_batches(open_client):
    before = _metrics(open_client)
    assert _value(before, "sdbert_http_requests_total", route="/v1/classify") is None
    assert _value(before, "sdbert_batch_texts_count") == 0 and _value(before, "sdbert_queue_depth") == 0
    assert open_client.post("/v1/classify", json={"texts": TEXTS}).status_code == 200
    assert open_client.post("/v1/classify", json={"texts": []}).status_code == 422
    after = _metrics(open_client)
    assert _value(after, "sdbert_http_requests_total", route="/v1/classify", code="200") == 1
    assert _value(after, "sdbert_http_requests_total", route="/v1/classify", code="422") == 1
    assert _value(after, "sdbert_http_requests_total", route="/metrics", code="200") == 1  # the first scrape
    assert _value(after, "sdbert_http_errors_total", code="422") == 1
    assert _value(after, "sdbert_http_request_duration_seconds_count", route="/v1/classify") == 2
    assert _value(after, "sdbert_batch_texts_count") == 1 and _value(after, "sdbert_batch_texts_sum") == 2
    assert _value(after, "sdbert_batch_texts_bucket", le="1.0") == 0
    assert _value(after, "sdbert_batch_texts_bucket", le="2.0") == 1
    info = after["sdbert_model_info"][0][0]
    assert info["name"] == "student" and info["attention_type"] == "block_sparse" and info["backend"] == "torch"
    from sdbert import __version__

    assert info["version"] == __version__


def test_each_app_has_its_own_registry(model, open_client):
    open_client.post("/v1/classify", json={"texts": TEXTS})
    with TestClient(create_app(model, name="other")) as other:
        samples = _metrics(other)
    assert _value(samples, "sdbert_http_requests_total", route="/v1/classify") is None
    assert samples["sdbert_model_info"][0][0]["name"] == "other"


def test_unknown_paths_share_one_metric_label(open_client):
    for i in range(3):
        open_client.get(f"/probe-{i}")
    assert _value(_metrics(open_client), "sdbert_http_requests_total", route="other", code="404") == 3


# --- access log -------------------------------------------------------------------------------------


def test_one_json_line_per_request_without_texts_or_key(locked_client, caplog):
    with caplog.at_level(logging.INFO, logger="sdbert.serving.access"):
        ok = locked_client.post("/v1/classify", json={"texts": TEXTS},
                                headers={"Authorization": f"Bearer {KEY}", "X-Request-ID": "req-42"})
        refused = locked_client.get("/v1/model", headers={"Authorization": "Bearer nope"})
    lines = [r.getMessage() for r in caplog.records if r.name == "sdbert.serving.access"]
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first == {"method": "POST", "path": "/v1/classify", "status": 200, "latency_ms": first["latency_ms"],
                     "texts": 2, "request_id": "req-42"}
    assert first["latency_ms"] > 0 and ok.headers["x-request-id"] == "req-42"
    assert second["status"] == 401 and second["texts"] is None
    assert len(second["request_id"]) == 32 and refused.headers["x-request-id"] == second["request_id"]
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert KEY not in everything and "nope" not in everything
    assert not any(word in everything for word in ("wonderful", "boring"))


# --- the key and the address ------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"])
def test_this_machine_needs_no_key(host):
    check_bind(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.org", ""])
def test_other_addresses_need_a_key_or_insecure(host):
    with pytest.raises(ConfigError, match="--insecure"):
        check_bind(host, None)
    check_bind(host, KEY)
    check_bind(host, None, insecure=True)


def test_the_key_comes_from_the_file_or_the_environment(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    assert read_api_key(str(key_file), {}) == KEY
    assert read_api_key(str(key_file), {"SDBERT_API_KEY": "from-env"}) == KEY  # the flag wins
    assert read_api_key(None, {"SDBERT_API_KEY": " from-env "}) == "from-env"
    assert read_api_key(None, {}) is None


@pytest.mark.parametrize("content, env, message", [
    ("", {}, "is empty"), (" \n", {}, "is empty"), (None, {}, "does not exist"),
    ("two words", {}, "one key"), ("a\nb", {}, "one key"), ("NOFILE", {"SDBERT_API_KEY": ""}, "is empty"),
])
def test_a_bad_key_is_a_user_error(tmp_path, content, env, message):
    path = None if content == "NOFILE" else str(tmp_path / "key")
    if content not in (None, "NOFILE"):
        (tmp_path / "key").write_text(content)
    with pytest.raises(ConfigError, match=message):
        read_api_key(path, env)


def test_cli_refuses_a_public_address_without_a_key_in_one_line(tmp_path, capsys, monkeypatch):
    from sdbert.cli import main

    monkeypatch.delenv("SDBERT_API_KEY", raising=False)
    # The model folder does not exist: the address is refused before anything is loaded.
    assert main(["serve", "--model", str(tmp_path / "student"), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "without an API key" in err and "--insecure" in err
    assert "Traceback" not in err
    (tmp_path / "empty").write_text("")
    assert main(["serve", "--model", str(tmp_path), "--api-key-file", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is empty" in err


def test_cli_passes_the_key_and_insecure_on(tmp_path, monkeypatch):
    """The CLI hands `serve` what it read (the real bind is not made here)."""
    import sdbert.serving.app
    from sdbert.cli import main

    calls = []
    monkeypatch.setattr(sdbert.serving.app, "serve", lambda model, **kw: calls.append(kw))
    monkeypatch.delenv("SDBERT_API_KEY", raising=False)
    assert main(["serve", "--model", str(tmp_path), "--host", "0.0.0.0", "--insecure"]) == 0
    monkeypatch.setenv("SDBERT_API_KEY", KEY)
    assert main(["serve", "--model", str(tmp_path), "--host", "0.0.0.0"]) == 0
    assert [(c["host"], c["api_key"], c["insecure"]) for c in calls] == [("0.0.0.0", None, True),
                                                                          ("0.0.0.0", KEY, False)]
