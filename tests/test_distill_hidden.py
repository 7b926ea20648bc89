"""The hidden-state loss and the online teacher: hand-computed loss, frozen teacher, online == cached
when nothing but the teacher mode differs, trained and resumed projections, the command end to end."""

import json

import pytest
import torch
from safetensors import safe_open

from helpers import CLI_TRAIN, args, assert_one_line_error, run_main, synthetic_examples, weights, write_review_csv
from sdbert import SDBertConfig, SDBertForSequenceClassification
from sdbert.errors import ConfigError
from sdbert.training.kd import (
    HiddenProjections,
    check_hidden_layer_map,
    default_hidden_layer_map,
    distillation_loss,
    hidden_state_loss,
    kd_loss_fn,
    online_kd_loss_fn,
)
from sdbert.training.loop import STATE_NAME, Batch, dataset_logits, train


def model(seed=0, *, hidden=32, layers=2, heads=2, attention_type="block_sparse"):
    torch.manual_seed(seed)
    return SDBertForSequenceClassification(SDBertConfig(
        vocab_size=40, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=2 * hidden, max_position_embeddings=128, block_size=8, num_random_blocks=1,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attention_type=attention_type))


def test_hidden_loss_matches_hand_computation_and_ignores_padding():
    # Two examples of 3 positions, width 2; the second example's last position is padding.
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    s1 = torch.tensor([[[1.0, 2.0], [0.0, 0.0], [3.0, 1.0]], [[1.0, 1.0], [2.0, 0.0], [50.0, 50.0]]])
    t1 = torch.tensor([[[0.0, 2.0], [1.0, 1.0], [3.0, 3.0]], [[1.0, 3.0], [0.0, 0.0], [0.0, 0.0]]])
    # squared differences of real tokens: 1+0, 1+1, 0+4 -> 7 / (3 tokens x 2 features);
    # 0+4, 4+0 -> 8 / (2 tokens x 2 features); the mean over the two examples
    pair1 = (7 / 6 + 8 / 4) / 2
    s2, t2 = torch.zeros(2, 3, 2), torch.ones(2, 3, 2)
    s2[1, 2] = -7.0  # padding: must not count
    pair2 = 1.0
    got = hidden_state_loss([s1, s2], [t1, t2], mask)
    assert torch.allclose(got, torch.tensor((pair1 + pair2) / 2))
    # Without a mask every position counts: the padded one adds 50^2 + 50^2 -> (7 + 8 + 5000) / 12
    assert torch.allclose(hidden_state_loss([s1], [t1], None), torch.tensor(5015 / 12))


def test_hidden_loss_of_a_batch_is_the_size_weighted_mean_of_its_parts():
    """What the trainer assumes when it splits a batch over processes or accumulation steps."""
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 6, 3), torch.randn(5, 6, 3)
    mask = torch.ones(5, 6, dtype=torch.long)
    mask[0, 2:], mask[3, 4:] = 0, 0
    whole = hidden_state_loss([student], [teacher], mask)
    parts = [slice(0, 2), slice(2, 5)]
    split = sum(hidden_state_loss([student[p]], [teacher[p]], mask[p]) * (p.stop - p.start) / 5 for p in parts)
    assert torch.allclose(whole, split)


def test_default_hidden_layer_map_ends_at_the_last_teacher_layer():
    assert default_hidden_layer_map(12, 3) == [3, 7, 11]
    assert default_hidden_layer_map(6, 3) == [1, 3, 5]
    assert default_hidden_layer_map(4, 4) == [0, 1, 2, 3]
    assert check_hidden_layer_map([5, 0], 6, 2) == [5, 0]
    for bad in ([0, 1, 2], [0, 6]):
        with pytest.raises(ConfigError):
            check_hidden_layer_map(bad, 6, 2)


def test_projection_only_when_widths_differ_and_it_is_trained():
    assert not list(HiddenProjections(8, 8, 2).parameters()), "same width: identity, no parameters"
    projections = HiddenProjections(6, 8, 2)
    assert [type(m) for m in projections.maps] == [torch.nn.Linear, torch.nn.Linear]
    student = [torch.randn(2, 4, 6, requires_grad=True) for _ in range(2)]
    teacher = [torch.randn(2, 4, 8) for _ in range(2)]
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    loss = hidden_state_loss(student, teacher, mask, projections)
    projected = [m(s) for m, s in zip(projections.maps, student, strict=True)]
    assert torch.allclose(loss, hidden_state_loss(projected, teacher, mask))
    loss.backward()
    for p in projections.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(s.grad.abs().sum() > 0 for s in student)


def test_online_loss_freezes_the_teacher_and_adds_the_weighted_hidden_term():
    teacher, student = model(0, hidden=32, layers=4), model(1, hidden=16, layers=2, heads=1)
    teacher.train()
    projections = HiddenProjections(16, 32, 2)
    loss_fn = online_kd_loss_fn(teacher, alpha=0.3, hidden_weight=2.5, projections=projections)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    batch = Batch(torch.randint(4, 40, (3, 16)), torch.ones(3, 16, dtype=torch.long), torch.arange(3),
                  torch.tensor([0, 1, 1]))
    batch.attention_mask[0, 10:] = 0
    loss = loss_fn(student, batch)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in projections.parameters())
    assert student.classifier.weight.grad.abs().sum() > 0

    with torch.no_grad():  # the same number, assembled by hand: student layers 0, 1 vs teacher layers 1, 3
        t = teacher(batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
        s = student(batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
        kd = distillation_loss(s.logits, t.logits, batch.labels, 0.3)
        hidden = hidden_state_loss([s.hidden_states[1], s.hidden_states[2]], [t.hidden_states[2], t.hidden_states[4]],
                                   batch.attention_mask, projections)
    assert torch.allclose(loss, kd + 2.5 * hidden, atol=1e-6)
    with pytest.raises(ConfigError):
        online_kd_loss_fn(teacher, alpha=0.5, hidden_weight=1.0)  # no projections
    with pytest.raises(ConfigError):
        online_kd_loss_fn(teacher, alpha=0.5, hidden_weight=-1.0)


def test_online_teacher_with_zero_hidden_weight_trains_like_cached_logits(tmp_path):
    """The oracle: the only difference is where the teacher's logits come from. (A full-attention
    teacher, because block-sparse logits may depend on a batch's padded length.)"""
    teacher = model(7, attention_type="full")
    data = synthetic_examples(48)
    cached, online = model(3, hidden=16, layers=1, heads=1), model(3, hidden=16, layers=1, heads=1)
    logits = dataset_logits(teacher, data)
    train(cached, data, None, args(tmp_path / "cached", max_steps=4), loss_fn=kd_loss_fn(logits, alpha=0.5))
    train(online, data, None, args(tmp_path / "online", max_steps=4), loss_fn=online_kd_loss_fn(teacher, alpha=0.5))
    a, b = weights(cached), weights(online)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert any(not torch.equal(a[k], v) for k, v in weights(model(3, hidden=16, layers=1, heads=1)).items())


def test_projections_are_trained_checkpointed_and_restored_on_resume(tmp_path):
    teacher, data = model(7), synthetic_examples(48)
    settings = dict(max_steps=6, save_every=2, batch_size=8)

    def run(output, student_seed, projection_seed, crash_at=None, resume=False):
        student = model(student_seed, hidden=16, layers=1, heads=1)
        torch.manual_seed(projection_seed)
        projections = HiddenProjections(16, 32, 1)
        inner = online_kd_loss_fn(teacher, alpha=0.5, hidden_weight=1.0, projections=projections)
        calls = {"n": 0}

        def loss_fn(m, batch):
            calls["n"] += 1
            if calls["n"] == crash_at:
                raise KeyboardInterrupt  # a kill between checkpoints 4 and 6
            return inner(m, batch)

        start = {k: v.clone() for k, v in projections.state_dict().items()}
        train(student, data, None, args(output, resume=resume, **settings),
              loss_fn=loss_fn, aux_module=projections)
        return student, projections, start

    student, projections, start = run(tmp_path / "full", 0, 0)
    assert any(not torch.equal(start[k], v) for k, v in projections.state_dict().items()), "projection trained"
    last = sorted((tmp_path / "full" / "checkpoints").glob("step-*"))[-1]
    state = torch.load(last / STATE_NAME, weights_only=False)
    assert all(torch.equal(state["aux"][k], v) for k, v in projections.state_dict().items())
    with safe_open(str(tmp_path / "full" / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == set(student.state_dict()), "the model folder holds the student only"

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", 0, 0, crash_at=5)
    # Other initial weights: everything must come from the checkpoint.
    resumed, resumed_projections, _ = run(tmp_path / "cut", 11, 12, resume=True)
    assert all(torch.equal(v, resumed_projections.state_dict()[k]) for k, v in projections.state_dict().items())
    assert all(torch.equal(v, weights(resumed)[k]) for k, v in weights(student).items())


# --- the command -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A tiny teacher (2 layers, width 128) trained for two steps through the real command."""
    from sdbert.cli import main

    root = tmp_path_factory.mktemp("hidden")
    data = write_review_csv(root / "reviews.csv", 80)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SDBERT_CACHE", str(root / "cache"))
        assert main(["train", "--data", str(data), "--output", str(root / "teacher"), *CLI_TRAIN,
                     "--max-steps", "2"]) == 0
    return root


def distill_args(root, output, *extra):
    return ["distill", "--teacher", str(root / "teacher"), "--data", str(root / "reviews.csv"), "--output",
            str(output), "--layers", "1", "--heads", "1", "--hidden", "32", "--batch-size", "8", "--no-progress",
            "--dropout", "0", "--precision", "fp32", *extra]


def test_distill_command_with_hidden_loss_writes_a_plain_student(teacher_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SDBERT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "student"
    result = run_main(capsys, *distill_args(teacher_dir, out, "--hidden-weight", "1", "--teacher-mode", "online",
                                            "--max-steps", "3", "--save-every", "2"))
    assert result.returncode == 0, result.stderr
    assert "teacher layers [1]" in result.stdout
    assert not (tmp_path / "cache" / "teacher_logits").exists(), "online mode caches no logits"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["teacher_mode"] == "online" and summary["hidden_layer_map"] == [1]
    student = SDBertForSequenceClassification.from_pretrained(out)
    assert student.config.hidden_size == 32 and student.config.num_hidden_layers == 1
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == set(SDBertForSequenceClassification(student.config).state_dict())
    last = sorted((out / "checkpoints").glob("step-*"))[-1]
    assert last.name == "step-0000003"
    assert torch.load(last / STATE_NAME, weights_only=False)["aux"]["maps.0.weight"].shape == (128, 32)

    # Resume continues with the projection from the checkpoint; without the hidden loss it refuses.
    result = run_main(capsys, *distill_args(teacher_dir, out, "--max-steps", "3", "--save-every", "2", "--resume"))
    assert_one_line_error(result, "--hidden-weight")
    result = run_main(capsys, *distill_args(teacher_dir, out, "--hidden-weight", "1", "--max-steps", "5",
                                            "--save-every", "2", "--resume"))
    assert result.returncode == 0, result.stderr
    assert sorted((out / "checkpoints").glob("step-*"))[-1].name == "step-0000005"


BAD = {
    "negative weight": (["--hidden-weight", "-1"], ["--hidden-weight"]),
    "map not numbers": (["--hidden-weight", "1", "--hidden-layer-map", "a,b"], ["--hidden-layer-map"]),
    "map out of range": (["--hidden-weight", "1", "--hidden-layer-map", "5"], ["out of range"]),
    "map too long": (["--hidden-weight", "1", "--hidden-layer-map", "0,1"], ["one teacher layer each"]),
    "map without weight": (["--hidden-layer-map", "1"], ["--hidden-layer-map"]),
    "cached with hidden": (["--hidden-weight", "1", "--teacher-mode", "cached"], ["--teacher-mode online"]),
    "unknown mode": (["--teacher-mode", "lazy"], ["--teacher-mode"]),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_hidden_flags_are_one_line_and_exit_2(teacher_dir, name, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SDBERT_CACHE", str(tmp_path / "cache"))
    flags, needles = BAD[name]
    out = tmp_path / "out"
    assert_one_line_error(run_main(capsys, *distill_args(teacher_dir, out, *flags)), *needles)
    assert not out.exists(), "nothing half-written"


@pytest.mark.slow
def test_torchrun_hidden_loss_two_processes_equal_one_process(teacher_dir, tmp_path):
    """The projections live outside DDP: their gradients are averaged by hand and must match one process."""
    import shutil
    import sys
    from pathlib import Path

    from helpers import sdbert
    from sdbert.checkpoint import read_weights

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    env = {"SDBERT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    common = [*distill_args(teacher_dir, "{out}", "--hidden-weight", "1", "--max-steps", "4", "--seed", "5")]
    one = sdbert(*[a.format(out=tmp_path / "one") for a in common], env_extra=env)
    assert one.returncode == 0, one.stderr
    launcher = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "sdbert"]
    two = sdbert(*[a.format(out=tmp_path / "two") for a in common], env_extra=env, launcher=launcher)
    assert two.returncode == 0, two.stderr[-3000:]
    last = [sorted((tmp_path / d / "checkpoints").glob("step-*"))[-1] for d in ("one", "two")]
    assert last[0].name == last[1].name == "step-0000004"
    a, b = read_weights(last[0]), read_weights(last[1])
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    pa, pb = (torch.load(p / STATE_NAME, weights_only=False)["aux"] for p in last)
    assert max((pa[k] - pb[k]).abs().max().item() for k in pa) < 1e-5


def test_alpha_one_skips_the_teacher_unless_the_hidden_loss_needs_it():
    from sdbert.training.distill import DistillConfig

    labels = DistillConfig(teacher="t", alpha=1.0, teacher_mode="online")  # the teacher would add nothing
    assert labels.labels_only and not labels.online
    hidden = DistillConfig(teacher="t", alpha=1.0, hidden_weight=0.5)  # its hidden states still teach
    assert not hidden.labels_only and hidden.online
    assert not DistillConfig(teacher="t", alpha=0.5).labels_only
