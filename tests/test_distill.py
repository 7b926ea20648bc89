import json

import pytest
import torch

from sdbert import SDBertConfig, SDBertForSequenceClassification
from sdbert.classifier import Classifier
from sdbert.errors import ConfigError
from sdbert.training.kd import (
    default_layer_map,
    distillation_loss,
    init_student_from_teacher,
    student_config,
)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_mse_loss_matches_hand_computation(alpha):
    student = torch.tensor([[1.0, -1.0], [0.5, 2.0], [0.0, 0.0]])
    teacher = torch.tensor([[2.0, -2.0], [0.0, 1.0], [3.0, -1.0]])
    labels = torch.tensor([0, 1, 0])
    # CE by hand: -log softmax(student)[label], averaged.
    ce = -sum(torch.log_softmax(student[i], -1)[labels[i]] for i in range(3)) / 3
    # ||z_t - z_s||^2 per example: (1 + 1), (0.25 + 1), (9 + 1) -> mean 13.25 / 3
    distance = (2.0 + 1.25 + 10.0) / 3
    expected = alpha * ce + (1 - alpha) * distance
    assert torch.allclose(distillation_loss(student, teacher, labels, alpha), expected)


def test_teacher_gets_no_gradient_and_student_does():
    student = torch.randn(4, 2, requires_grad=True)
    teacher = torch.randn(4, 2, requires_grad=True)
    distillation_loss(student, teacher, torch.tensor([0, 1, 1, 0]), 0.5).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_kl_kind_is_temperature_scaled_kl():
    student, teacher = torch.randn(5, 3), torch.randn(5, 3)
    t = 2.0
    p_t = torch.softmax(teacher / t, -1)
    kl = (p_t * (p_t.log() - torch.log_softmax(student / t, -1))).sum(-1).mean() * t * t
    got = distillation_loss(student, teacher, None, alpha=0.0, kind="kl", temperature=t)
    assert torch.allclose(got, kl, atol=1e-6)


def test_unlabelled_examples_contribute_only_the_distillation_term():
    student, teacher = torch.randn(4, 2), torch.randn(4, 2)
    labels = torch.tensor([0, -100, 1, -100])
    ce = torch.nn.functional.cross_entropy(student[[0, 2]], labels[[0, 2]])
    distance = (teacher - student).pow(2).sum(-1).mean()
    assert torch.allclose(distillation_loss(student, teacher, labels, 0.5), 0.5 * ce + 0.5 * distance)
    all_unlabelled = distillation_loss(student, teacher, torch.full((4,), -100), 0.5)
    assert torch.allclose(all_unlabelled, 0.5 * distance)


@pytest.mark.parametrize("bad", [dict(alpha=7), dict(alpha=-0.1), dict(alpha=0.5, kind="l1"),
                                 dict(alpha=0.5, kind="kl", temperature=0)])
def test_bad_loss_arguments(bad):
    with pytest.raises(ConfigError):
        distillation_loss(torch.zeros(1, 2), torch.zeros(1, 2), None, **bad)


def test_default_layer_map_is_evenly_spaced():
    assert default_layer_map(12, 3) == [0, 4, 8]
    assert default_layer_map(6, 3) == [0, 2, 4]
    assert default_layer_map(6, 6) == list(range(6))
    with pytest.raises(ConfigError):
        default_layer_map(3, 4)


def test_init_from_teacher_copies_exactly_what_it_says():
    teacher_cfg = SDBertConfig(vocab_size=50, hidden_size=24, num_hidden_layers=6, num_attention_heads=6,
                               intermediate_size=48, max_position_embeddings=128, block_size=8)
    teacher = SDBertForSequenceClassification(teacher_cfg)
    cfg = student_config(teacher_cfg, layers=3, heads=2)
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.hidden_size) == (3, 2, 24)
    assert cfg.attention_type == "block_sparse"
    student = SDBertForSequenceClassification(cfg)
    copied = init_student_from_teacher(student, teacher)
    assert len(copied) == len(student.state_dict()), "same width: every tensor comes from the teacher"
    t, s = teacher.state_dict(), student.state_dict()
    for student_layer, teacher_layer in enumerate([0, 2, 4]):
        for suffix in ("attention.self.query.weight", "output.LayerNorm.bias", "intermediate.dense.weight"):
            assert torch.equal(s[f"bert.encoder.layer.{student_layer}.{suffix}"],
                               t[f"bert.encoder.layer.{teacher_layer}.{suffix}"])
    for name in ("bert.embeddings.word_embeddings.weight", "bert.pooler.dense.weight", "classifier.weight"):
        assert torch.equal(s[name], t[name])
    custom = SDBertForSequenceClassification(cfg)
    init_student_from_teacher(custom, teacher, layer_map=[5, 3, 1])
    assert torch.equal(custom.state_dict()["bert.encoder.layer.0.output.dense.weight"],
                       t["bert.encoder.layer.5.output.dense.weight"])
    with pytest.raises(ConfigError):
        init_student_from_teacher(custom, teacher, layer_map=[0, 1])
    with pytest.raises(ConfigError, match="hidden size"):
        init_student_from_teacher(SDBertForSequenceClassification(student_config(teacher_cfg, hidden=12, heads=2)),
                                  teacher)


def test_distill_command_end_to_end_reuses_cached_teacher_logits(trained_teacher, tmp_path):
    """A teacher trained on a tiny task, then two students: the second reads the teacher logits."""
    import json

    from helpers import sdbert

    data, teacher = trained_teacher / "reviews.csv", trained_teacher / "teacher"
    env = {"SDBERT_CACHE": str(tmp_path / "cache")}
    summaries = []
    for name, init, extra in (("kd1", "random", []), ("kd2", "teacher", []),
                              ("kd3", "teacher", ["--embedding-size", "8", "--augment", "2"]),
                              ("cut", "teacher", ["--vocab-size", "120"]),
                              ("labels", "teacher", ["--alpha", "1"])):
        run = sdbert("distill", "--teacher", str(teacher), "--data", str(data), "--output",
                     str(tmp_path / name), "--layers", "1", "--heads", "1", "--init", init, "--epochs", "2",
                     "--batch-size", "8", "--no-progress", *extra, env_extra=env)
        assert run.returncode == 0, run.stderr
        summaries.append(json.loads((tmp_path / name / "summary.json").read_text()))
        if name == "kd3":  # every logit pass so far is cached
            logit_files = len(list((tmp_path / "cache" / "teacher_logits").glob("*.npy")))
    assert summaries[0]["teacher_logits_cached"] is False
    for folder in (teacher, tmp_path / "kd1"):  # each model folder gets its card, written from its summary.json
        card = (folder / "README.md").read_text()
        assert card.startswith("---\nlibrary_name: sdbert") and "validation texts" in card
    assert "knowledge-distillation" in (tmp_path / "kd1" / "README.md").read_text()
    assert summaries[0]["data"]["source"] == str(data) and summaries[0]["settings"]["epochs"] == 2
    assert summaries[1]["teacher_logits_cached"] is True and summaries[1]["teacher_logits_seconds"] == 0.0
    student = Classifier.from_pretrained(tmp_path / "kd2")  # the teacher's tokenizer and this run's settings
    assert student.config.num_hidden_layers == 1 and student.config.num_attention_heads == 1
    assert student.tokenizer.to_str() == Classifier.from_pretrained(teacher).tokenizer.to_str()
    assert summaries[0]["parameters"] < json.loads((teacher / "summary.json").read_text())["parameters"]
    small = Classifier.from_pretrained(tmp_path / "kd3")  # factorised embeddings, saved and loaded as such
    assert small.config.embedding_size == 8 and summaries[2]["parameters"] < summaries[1]["parameters"]
    assert small.model.bert.embeddings.word_embeddings.weight.shape[1] == 8
    # --augment 2: two teacher-labelled copies of every labelled text join the transfer set (new logits)
    assert summaries[2]["data"]["train_examples"] == 3 * summaries[1]["data"]["train_examples"]
    assert summaries[2]["teacher_logits_cached"] is False
    # --vocab-size: the student's own, smaller tokenizer and table; the teacher's logits on its own encoding
    cut = Classifier.from_pretrained(tmp_path / "cut")
    assert cut.tokenizer.get_vocab_size() == cut.config.vocab_size == summaries[3]["vocab_size"] <= 120
    assert cut.model.bert.embeddings.word_embeddings.weight.shape[0] == cut.config.vocab_size
    assert summaries[3]["teacher_logits_cached"] is True and summaries[3]["parameters"] < summaries[1]["parameters"]
    assert cut(["a wonderful film"])[0]["label"] in ("neg", "pos")
    assert f"Its vocabulary holds {cut.config.vocab_size:,} tokens." in (tmp_path / "cut" / "README.md").read_text()
    # --alpha 1: the labels alone; the teacher only lends its tokenizer and weights, its logits are not computed
    assert summaries[4]["teacher_mode"] == "none" and "teacher_logits_seconds" not in summaries[4]
    assert len(list((tmp_path / "cache" / "teacher_logits").glob("*.npy"))) == logit_files == 2


def test_factorised_embeddings_are_a_truncated_svd_of_the_source():
    """At full width the student embeds exactly as its source; narrower, its tables are the source's projected
    onto the top singular directions of the stacked tables, and the error shrinks as the width grows."""
    from sdbert.training.kd import embedding_tables, init_student

    cfg = SDBertConfig(vocab_size=60, hidden_size=24, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=48, max_position_embeddings=64, block_size=8, attention_type="full")
    torch.manual_seed(0)
    source = SDBertForSequenceClassification(cfg).eval()
    ids = torch.randint(1, 60, (3, 40))
    full = init_student(cfg.replace(embedding_size=24), "teacher", teacher=source).eval()
    with torch.no_grad():
        assert torch.allclose(full(ids).logits, source(ids).logits, atol=1e-5)
    stacked = torch.cat(embedding_tables(source.bert.embeddings))
    errors = []
    for width in (4, 8, 16):
        small = init_student(cfg.replace(embedding_size=width), "pretrained", start=source)
        projection = small.bert.embeddings.projection.weight  # (hidden, width), orthonormal columns
        assert torch.allclose(projection.T @ projection, torch.eye(width), atol=1e-5)
        approx = torch.cat(embedding_tables(small.bert.embeddings))
        singular = torch.linalg.svdvals(stacked)  # Eckart-Young: the best rank-`width` error
        error = torch.linalg.matrix_norm(stacked - approx)
        assert error == pytest.approx(float(singular[width:].square().sum().sqrt()), rel=1e-3)
        errors.append(float(error))
        assert not torch.equal(small.classifier.weight, source.classifier.weight)  # pretrained: a new head
    assert errors == sorted(errors, reverse=True)
    with pytest.raises(ConfigError, match="hidden_size"):
        cfg.replace(embedding_size=25)


def test_a_cut_vocabulary_keeps_the_sources_rows_and_its_logits_on_kept_pieces():
    """With `vocab_ids`, the student's word table is the source's kept rows (factorised too): on ids of kept
    pieces, renumbered, it gives exactly the logits of the student over the whole vocabulary."""
    from sdbert.data.vocabulary import VocabularyCut
    from sdbert.training.kd import init_student, with_vocabulary

    cfg = SDBertConfig(vocab_size=60, hidden_size=24, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=48, max_position_embeddings=64, block_size=8, attention_type="full")
    torch.manual_seed(0)
    source = SDBertForSequenceClassification(cfg).eval()
    kept = [0, *range(5, 60, 2)]  # [PAD] and every other piece
    cut = VocabularyCut(tokenizer=None, ids=kept)
    ids = torch.tensor([[kept[i] for i in range(1, 29)] * 2])
    renumbered = torch.tensor([[kept.index(int(i)) for i in ids[0]]])
    for embedding_size in (None, 24):
        whole = init_student(cfg.replace(embedding_size=embedding_size), "teacher", teacher=source).eval()
        small_cfg = with_vocabulary(cfg.replace(embedding_size=embedding_size), cut)
        small = init_student(small_cfg, "teacher", teacher=source, vocab_ids=kept).eval()
        assert small.config.vocab_size == len(kept) and small.config.pad_token_id == 0
        assert small.bert.embeddings.word_embeddings.weight.shape[0] == len(kept)
        with torch.no_grad():
            assert torch.allclose(small(renumbered).logits, whole(ids).logits, atol=1e-5)


def _perturbed(model: SDBertForSequenceClassification) -> SDBertForSequenceClassification:
    """A stand-in for fine-tuning: every tensor moved, the config remembering where it started."""
    tuned = SDBertForSequenceClassification(model.config)
    tuned.load_state_dict({k: v + 0.01 * torch.randn_like(v) for k, v in model.state_dict().items()})
    return tuned


def test_init_pretrained_copies_the_starting_checkpoint_and_nothing_fine_tuned(tmp_path):
    from sdbert.training.kd import init_student_from_pretrained, starting_checkpoint

    cfg = SDBertConfig(vocab_size=50, hidden_size=24, num_hidden_layers=6, num_attention_heads=6,
                       intermediate_size=48, max_position_embeddings=128, block_size=8)
    torch.manual_seed(0)
    start = SDBertForSequenceClassification(cfg)
    start.save_pretrained(tmp_path / "start")
    teacher = _perturbed(start)
    teacher.config.init_checkpoint = str(tmp_path / "start")
    torch.manual_seed(1)
    student = SDBertForSequenceClassification(student_config(cfg, layers=3, heads=2))
    head_before = student.classifier.weight.clone()
    copied = init_student_from_pretrained(student, starting_checkpoint(teacher))
    assert not any(name.startswith("classifier.") for name in copied)
    s, c, t = student.state_dict(), start.state_dict(), teacher.state_dict()
    layer_map = {0: 0, 1: 2, 2: 4}
    for name, value in s.items():
        origin = name
        if name.startswith("bert.encoder.layer."):
            parts = name.split(".")
            parts[3] = str(layer_map[int(parts[3])])
            origin = ".".join(parts)
        if name.startswith("classifier."):  # new head (its bias starts at zero in both)
            assert name.endswith("bias") or not torch.equal(value, c[name]), "the classifier is not new"
            continue
        assert torch.equal(value, c[origin]), f"{name} is not the starting checkpoint's {origin}"
        assert not torch.equal(value, t[origin]), f"{name} leaked from the fine-tuned teacher"
    assert torch.equal(student.classifier.weight, head_before)
    assert not torch.equal(student.classifier.weight, t["classifier.weight"])


def test_starting_checkpoint_errors_are_one_line(tmp_path):
    from sdbert.training.kd import starting_checkpoint

    cfg = SDBertConfig(vocab_size=50, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=48, max_position_embeddings=64, block_size=8)
    teacher = SDBertForSequenceClassification(cfg)
    with pytest.raises(ConfigError, match="--init-from"):
        starting_checkpoint(teacher)
    with pytest.raises(ConfigError, match="not a folder"):
        starting_checkpoint(teacher, str(tmp_path / "missing"))
    SDBertForSequenceClassification(cfg.replace(vocab_size=60)).save_pretrained(tmp_path / "other")
    with pytest.raises(ConfigError, match="is not what the teacher was fine-tuned from"):
        starting_checkpoint(teacher, str(tmp_path / "other"))


def test_distill_init_pretrained_from_the_recorded_checkpoint(trained_teacher, tmp_path):
    """`train --init X` records X; `distill --init pretrained` finds it there; misuse is one line, exit 2."""
    import json

    from helpers import sdbert

    data, start = trained_teacher / "reviews.csv", trained_teacher / "teacher"  # a from-scratch model
    env = {"SDBERT_CACHE": str(tmp_path / "cache")}
    tuned = sdbert("train", "--data", str(data), "--output", str(tmp_path / "teacher"), "--init",
                   str(start), "--max-length", "64", "--block-size", "8", "--epochs", "1",
                   "--batch-size", "8", "--no-progress", env_extra=env)
    assert tuned.returncode == 0, tuned.stderr
    recorded = json.loads((tmp_path / "teacher" / "config.json").read_text())["init_checkpoint"]
    assert recorded == str(start.resolve())
    common = ["distill", "--teacher", str(tmp_path / "teacher"), "--data", str(data), "--layers", "1", "--heads", "1",
              "--epochs", "1", "--batch-size", "8", "--no-progress"]
    run = sdbert(*common, "--init", "pretrained", "--output", str(tmp_path / "student"), env_extra=env)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "student" / "model.safetensors").exists()
    bad = sdbert(*common, "--init", "teacher", "--init-from", str(start), "--output",
                 str(tmp_path / "bad"), env_extra=env)
    assert bad.returncode == 2 and "--init-from only applies" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
    scratch = sdbert(*common[:2], str(start), *common[3:], "--init", "pretrained", "--output",
                     str(tmp_path / "bad2"), env_extra=env)
    assert scratch.returncode == 2 and "--init-from PATH" in scratch.stderr, scratch.stderr


def test_cached_teacher_logits_remember_what_the_pass_cost(tmp_path):
    """A run that reads the logits from the cache can still report what computing them cost."""
    from sdbert.data import EncodedDataset
    from sdbert.training.kd import cached_teacher_logits, teacher_logits_cost

    cfg = SDBertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, max_position_embeddings=64, block_size=8)
    teacher = SDBertForSequenceClassification(cfg)
    ids = torch.randint(5, 50, (30,)).numpy().astype("int32")
    examples = EncodedDataset(ids, torch.tensor([0, 10, 20, 30]).numpy(), torch.tensor([0, 1, 0]).numpy())
    assert teacher_logits_cost("k1", tmp_path) is None
    first = cached_teacher_logits(teacher, examples, key="k1", cache_dir=tmp_path, progress=False)
    assert not first.cached and first.seconds > 0 and first.cost == first.seconds
    again = cached_teacher_logits(teacher, examples, key="k1", cache_dir=tmp_path, progress=False)
    assert again.cached and again.seconds == 0.0 and torch.equal(first.logits, again.logits)
    assert again.cost == pytest.approx(first.seconds, abs=0.01)  # what a user without the cache pays
    assert teacher_logits_cost("k1", tmp_path) == pytest.approx(first.seconds, abs=0.01)
    (tmp_path / "teacher_logits" / "k1.npy").write_bytes(b"\x93NUMPY cut short")  # a corrupt cache entry
    third = cached_teacher_logits(teacher, examples, key="k1", cache_dir=tmp_path, progress=False)
    assert not third.cached and torch.equal(first.logits, third.logits)


def test_teacher_identity_covers_its_config(tmp_path):
    """The same weights with another config (attention, block size) give other logits: another cache key."""
    from sdbert.checkpoint import weights_fingerprint

    cfg = SDBertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, max_position_embeddings=64, block_size=8)
    SDBertForSequenceClassification(cfg).save_pretrained(tmp_path)
    before = weights_fingerprint(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "attention_type": "full"}))
    assert weights_fingerprint(tmp_path) != before
