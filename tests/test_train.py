import csv
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from l1cert.attacks import project_l1, smoothadv_pgd, smoothed_loss
from l1cert.cli import main
from l1cert.config import DataConfig, TrainConfig, Type2Config
from l1cert.data import load_split
from l1cert.models import load_model
from l1cert.noise import make_noise
from l1cert.provenance import code_digest
from l1cert.train import CHECKPOINT, OUTPUTS, evaluate, train
from l1cert.utils import L1CertError


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # also makes runs bitwise comparable
    yield
    torch.set_num_threads(threads)


DIGITS = DataConfig(dataset="digits")


def _config(**changes):
    base = dict(arch="digits_mlp", noise="laplace", sigma=0.25, epochs=10)
    return TrainConfig(**{**base, "lr_step": 5, **changes})


@pytest.fixture(scope="module")
def type1_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("type1")
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        metrics = train(_config(), out, DIGITS, device="cpu")
    return out, metrics


def test_type1_digits_is_accurate_under_laplace_noise(type1_run):
    out, metrics = type1_run
    assert metrics["noise_accuracy"] >= 0.85 and metrics["clean_accuracy"] >= 0.9
    assert json.loads((out / "metrics.json").read_text()) == metrics
    rows = list(csv.DictReader((out / "train-log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 11))
    assert [float(r["lr"]) for r in rows[4:6]] == [0.1, pytest.approx(0.01)]  # StepLR
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    # The saved model is the one measured, and its meta rebuilds it.
    model, meta = load_model(out / "model.pt")
    assert (meta["arch"], meta["noise"], meta["sigma"], meta["training"]) == (
        "digits_mlp",
        "laplace",
        0.25,
        "type1",
    )
    assert (
        meta["scale"] == pytest.approx(0.25 / 2**0.5) and "type2" not in meta
    )  # type1: no type2 section
    assert meta["code"] == code_digest("train")  # the code that trained it, for benchmarks
    again = evaluate(model, load_split("digits", "test"), make_noise("laplace", 0.25), seed=0)
    assert again == {k: v for k, v in metrics.items() if k != "train_seconds"}


def test_same_seed_same_weights_and_finished_runs_are_not_redone(tmp_path, type1_run):
    out, metrics = type1_run
    log = (out / "train-log.csv").read_text()
    assert train(_config(), out, DIGITS, device="cpu") == metrics  # at the end: nothing to do
    assert (out / "train-log.csv").read_text() == log
    other = train(_config(seed=1, epochs=2), tmp_path / "s1", DIGITS, device="cpu")
    assert other != metrics


def test_resume_refuses_other_settings(type1_run):
    out, metrics = type1_run
    with pytest.raises(L1CertError, match="other settings \\(sigma\\)"):
        train(_config(sigma=0.5), out, DIGITS, device="cpu")
    # threads decide the weights (a CPU BLAS splits sums across them); workers do not
    with pytest.raises(L1CertError, match="other settings \\(threads\\)"):
        train(_config(threads=1), out, DIGITS, device="cpu")
    assert train(_config(workers=1), out, DIGITS, device="cpu") == metrics
    with pytest.raises(L1CertError, match="--dataset is required"):
        train(_config(), out, DataConfig(), device="cpu")


def test_the_settings_a_checkpoint_records():
    settings = _config(workers=1).settings(DIGITS)
    assert settings["dataset"] == "digits" and settings["threads"] is None
    assert "workers" not in settings and "root" not in settings
    assert "image_size" not in settings  # digits' size is fixed
    assert "type2" not in settings  # type1 training has no type2 section
    folder = DataConfig(dataset="imagefolder", image_size=16)
    assert _config().settings(folder)["image_size"] == 16
    assert _config(training="type2").settings(DIGITS)["type2"] == Type2Config().deciding()


# --- type 2: SmoothAdv ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch_and_noise(type1_run):
    model, _ = load_model(type1_run[0] / "model.pt")
    test = load_split("digits", "test")
    x, y = test.images[:64], test.labels[:64]
    noise = make_noise("laplace", 0.25).sample_(torch.empty(4, *x.shape), torch.Generator())
    return model, x, y, noise


@pytest.mark.parametrize("norm, epsilon", [("linf", 0.1), ("l2", 0.5), ("l1", 2.0)])
def test_attack_raises_the_loss_and_stays_in_its_ball(batch_and_noise, norm, epsilon):
    model, x, y, noise = batch_and_noise
    model.train()  # the attack must switch to eval mode itself and restore the mode after
    x_adv = smoothadv_pgd(model, x, y, noise, norm, epsilon, steps=4)
    assert model.training
    model.eval()
    with torch.no_grad():
        before, after = smoothed_loss(model, x, y, noise), smoothed_loss(model, x_adv, y, noise)
    assert after.mean() > before.mean() * 1.1 and (after >= before - 1e-6).float().mean() > 0.9
    delta = (x_adv - x).flatten(1)
    size = {"linf": delta.abs().amax(1), "l2": delta.norm(dim=1), "l1": delta.abs().sum(1)}[norm]
    assert size.max() <= epsilon * (1 + 1e-5) and size.mean() > 0.3 * epsilon
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_type2_loss_is_at_least_the_type1_loss_on_the_same_batch_and_noise(batch_and_noise):
    model, x, y, noise = batch_and_noise
    x_adv = smoothadv_pgd(model, x, y, noise, "linf", 0.05, steps=1)
    targets = y.repeat(len(noise))
    with torch.no_grad():
        type1 = torch.nn.functional.cross_entropy(model((x + noise).flatten(0, 1)), targets)
        type2 = torch.nn.functional.cross_entropy(model((x_adv + noise).flatten(0, 1)), targets)
    assert type2 >= type1


def test_l1_projection_matches_its_definition():
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(6, 50, generator=gen) * torch.tensor([[0.01], [0.1], [1], [3], [10], [0]])
    p = project_l1(v, 1.0)
    assert torch.equal(p[[0, 5]], v[[0, 5]])  # already inside: unchanged
    assert torch.allclose(p[1:5].abs().sum(1), torch.ones(4), atol=1e-5)
    # The projection is soft thresholding: every moved coordinate moved by the same amount.
    for row, proj in zip(v[2:5], p[2:5], strict=True):
        kept = proj != 0
        shrink = (row.abs() - proj.abs())[kept]
        assert torch.allclose(shrink, shrink[0].expand_as(shrink), atol=1e-5)
        assert (row.abs()[~kept] <= shrink[0] + 1e-6).all()


@pytest.mark.parametrize("norm, epsilon", [("linf", 0.05), ("l1", 1.0)])
def test_type2_trains_a_usable_model(tmp_path, norm, epsilon):
    type2 = Type2Config(norm=norm, epsilon=epsilon, steps=2, samples=2, warmup_epochs=3)
    metrics = train(_config(training="type2", type2=type2), tmp_path, DIGITS, device="cpu")
    assert metrics["noise_accuracy"] >= 0.85
    rows = list(csv.DictReader((tmp_path / "train-log.csv").open()))
    assert [float(r["epsilon"]) for r in rows[:4]] == pytest.approx(
        [epsilon / 3, 2 * epsilon / 3, epsilon, epsilon],
        rel=1e-5,  # linear warm-up
    )
    _, meta = load_model(tmp_path / "model.pt")
    assert meta["training"] == "type2" and meta["type2"]["norm"] == norm


# --- the command line ----------------------------------------------------------------------

TRAIN = ["train", "--dataset", "digits", "--arch", "digits_mlp", "--noise", "laplace"]
TRAIN += ["--sigma", "0.25", "--epochs", "1", "--device", "cpu"]


@pytest.mark.parametrize(
    "change, message",
    [
        (["--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["--arch", "vgg"], "unknown arch 'vgg'"),
        (["--noise", "cauchy"], "unknown noise 'cauchy'"),
        (["--training", "type3"], "unknown training 'type3'"),
        (["--sigma", "-0.5"], "sigma must be a positive number"),
        (["--epochs", "0"], "epochs must be at least 1"),
        (
            ["--dataset", "imagenet", "--arch", "resnet50", "--imagenet-dir", "/nonexistent"],
            "imagenet directory /nonexistent not found",
        ),
        (["--type2-norm", "l3", "--training", "type2"], "unknown type2 norm"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, change, message):
    result = CliRunner().invoke(main, [*TRAIN, *change, "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"l1cert: error: {result.stderr.strip()[15:]}"
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "model.pt").exists()


def test_cli_corrupt_checkpoint_exits_2_without_traceback(tmp_path):
    (tmp_path / "checkpoint-last.pt").write_bytes(b"\x80\x02garbage")
    result = CliRunner().invoke(main, [*TRAIN, "--out", str(tmp_path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1].startswith("l1cert: error: checkpoint ")
    assert "corrupt" in result.stderr and not (tmp_path / "model.pt").exists()


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tmp_path):
    """SIGKILL a real `l1cert train` after its first epoch; the restart must match exactly."""
    args = [sys.executable, "-m", "l1cert.cli", *TRAIN[:-4], "--epochs", "5", "--lr-step", "2"]
    args += ["--training", "type2", "--type2-steps", "3", "--type2-samples", "2"]
    args += ["--type2-warmup-epochs", "2", "--batch-size", "16", "--device", "cpu"]
    args += ["--threads", "1"]
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    checkpoint = killed / "checkpoint-last.pt"
    proc = subprocess.Popen([*args, "--out", str(killed)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done_epochs = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= done_epochs < 5 and not (killed / "model.pt").exists()

    resumed = subprocess.run([*args, "--out", str(killed)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"after epoch {done_epochs}" in resumed.stderr
    # no temporaries left, and the resume checkpoint went once model.pt was written
    assert sorted(p.name for p in killed.iterdir()) == sorted(set(OUTPUTS) - {CHECKPOINT})
    # The uninterrupted reference run, in this process (one thread, like the subprocesses).
    assert CliRunner().invoke(main, [*args[3:], "--out", str(whole)]).exit_code == 0

    a, _ = load_model(killed / "model.pt")
    b, _ = load_model(whole / "model.pt")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    logs = [list(csv.DictReader((d / "train-log.csv").open())) for d in (killed, whole)]
    drop_time = [[{k: v for k, v in r.items() if k != "seconds"} for r in log] for log in logs]
    assert drop_time[0] == drop_time[1] and len(logs[0]) == 5
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (killed, whole)]
    assert metrics[0]["noise_accuracy"] == metrics[1]["noise_accuracy"]


# --- the log after a kill at its last rename ---------------------------------------------------


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no `except Exception` catches it."""


def test_a_log_left_an_epoch_short_is_rewritten_from_the_checkpoint(tmp_path, monkeypatch):
    """Killed as it renamed train-log.csv after the last epoch: the checkpoint holds every
    epoch, the log one fewer, and no model.pt yet. The rerun restores the log."""
    import l1cert.train as training

    config = _config(epochs=2)
    real = training.atomic_write_text

    def kill_at_the_last_log(path, text):
        if path.name == "train-log.csv" and text.count("\n") == 1 + config.epochs:
            raise _Killed
        real(path, text)

    monkeypatch.setattr(training, "atomic_write_text", kill_at_the_last_log)
    with pytest.raises(_Killed):
        train(config, tmp_path, DIGITS, device="cpu")
    monkeypatch.undo()
    assert len((tmp_path / "train-log.csv").read_text().splitlines()) == 1 + 1
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert state["epoch"] == 2 and not (tmp_path / "model.pt").exists()

    train(config, tmp_path, DIGITS, device="cpu")
    assert (tmp_path / "train-log.csv").read_text() == training._csv(state["log"])
    _, meta = load_model(tmp_path / "model.pt")
    assert meta["log"] == state["log"]  # kept in the model once the checkpoint is gone


def test_a_finished_run_restores_a_short_log_from_its_model(tmp_path):
    """The same when the log is short beside a finished model.pt (checkpoint removed)."""
    config = _config(epochs=2)
    train(config, tmp_path, DIGITS, device="cpu")
    log = tmp_path / "train-log.csv"
    original = log.read_text()
    log.write_text("".join(original.splitlines(keepends=True)[:-1]))  # one epoch short
    train(config, tmp_path, DIGITS, device="cpu")
    assert log.read_text() == original and len(original.splitlines()) == 1 + 2

    # A model saved before models kept their log: the log is left as it is.
    ckpt = torch.load(tmp_path / "model.pt", weights_only=True)
    del ckpt["meta"]["log"]
    torch.save(ckpt, tmp_path / "model.pt")
    log.write_text("short\n")
    train(config, tmp_path, DIGITS, device="cpu")
    assert log.read_text() == "short\n"


# --- run-only: the data loader's workers --------------------------------------------------------


def _tiny_imagefolder(root):
    """Two classes of random 10x12 PNGs: 6 training images each, 2 test images each."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 2)):
        for label in ("cat", "dog"):
            folder = root / "imagefolder" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def test_data_loader_workers_change_no_weight(tmp_path):
    """Augmentation (crops, flips) is seeded per example (`train.SeededExamples`), so
    training with 2 worker processes gives the weights of training in this process."""
    _tiny_imagefolder(tmp_path / "data")
    data = DataConfig(dataset="imagefolder", root=str(tmp_path / "data"), image_size=8)
    config = dict(arch="digits_mlp", noise="laplace", sigma=0.25, epochs=1, batch_size=4,
                  threads=1)  # fmt: skip
    found = []
    for workers in (0, 2):
        out = tmp_path / f"workers-{workers}"
        metrics = train(TrainConfig(**config, workers=workers), out, data, device="cpu")
        model, meta = load_model(out / "model.pt")
        assert meta["input_shape"] == [3, 8, 8] and metrics["test_images"] == 4
        assert "workers" not in meta and meta["image_size"] == 8
        log = list(csv.DictReader((out / "train-log.csv").open()))
        log = [{k: v for k, v in row.items() if k != "seconds"} for row in log]
        del metrics["train_seconds"]
        found.append((model.state_dict(), metrics, log))
    (first, *rest), (second, *rest_again) = found
    for (name, a), b in zip(first.items(), second.values(), strict=True):
        assert torch.equal(a, b), name
    assert rest == rest_again  # the same metrics and losses


# --- the training objectives ---------------------------------------------------------------------


class _Fixed(torch.nn.Module):
    """Logits that are a fixed linear map of the input (a model whose outputs a test can
    recompute by hand)."""

    def __init__(self, features: int, classes: int = 3):
        super().__init__()
        self.linear = torch.nn.Linear(features, classes)
        torch.nn.init.normal_(self.linear.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, x):
        return self.linear(x.flatten(1))


def _objective_loss(training: str, noise_name: str = "laplace", **section):
    from l1cert.objectives import OBJECTIVES

    config = _config(training=training, **section)
    x = torch.rand(5, 4, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 1, 0])
    noise, model = make_noise(noise_name, 0.5), _Fixed(4)
    loss, logits, labels = OBJECTIVES[training].loss(
        model, x, y, noise, torch.Generator().manual_seed(2), config, 0
    )
    return loss, logits, labels, model


def test_the_consistency_loss_is_jeong_and_shin_s():
    """Mean cross-entropy over m copies + λ·mean KL(p̄ ‖ p_i) + η·entropy(p̄), recomputed
    from the logits in numpy."""
    from l1cert.config import ConsistencyConfig

    section = ConsistencyConfig(copies=3, weight=7.0, entropy=0.3)
    loss, logits, labels, _ = _objective_loss("consistency", consistency=section)
    z = logits.detach().double().numpy().reshape(3, 5, 3)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    xent = -np.log(p[:, np.arange(5), labels.numpy()[:5]]).mean()
    mean = p.mean(0)
    kl = (mean * (np.log(mean) - np.log(p))).sum(-1).mean()
    entropy = -(mean * np.log(mean)).sum(-1).mean()
    assert labels.tolist() == [0, 1, 2, 1, 0] * 3
    assert loss.item() == pytest.approx(xent + 7.0 * kl + 0.3 * entropy, rel=1e-5)


def test_the_stability_loss_is_two_cross_entropies_and_their_kl():
    from l1cert.config import StabilityConfig

    loss, logits, labels, _ = _objective_loss("stability", stability=StabilityConfig(weight=4.0))
    z = logits.detach().double().numpy().reshape(2, 5, 3)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    xent = -np.log(p[:, np.arange(5), labels.numpy()[:5]]).mean()
    kl = (p[0] * (np.log(p[0]) - np.log(p[1]))).sum(-1).mean()
    assert loss.item() == pytest.approx(xent + 4.0 * kl, rel=1e-5)


@pytest.mark.parametrize("training", ["type1", "type2", "consistency", "stability"])
@pytest.mark.parametrize("noise", ["gaussian", "laplace", "uniform", "split"])
def test_every_noise_trains_with_every_objective(noise, training):
    """One step of each objective under each sampled noise: a finite loss whose gradient
    reaches every parameter."""
    loss, _, _, model = _objective_loss(training, noise)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_an_objective_s_own_settings_decide_only_its_models():
    from l1cert.config import ConsistencyConfig

    consistency = _config(training="consistency", consistency=ConsistencyConfig(weight=20.0))
    settings = consistency.settings(DIGITS)
    assert settings["consistency"] == {"copies": 2, "weight": 20.0, "entropy": 0.5}
    assert "stability" not in settings and "type2" not in settings
    type1 = _config(consistency=ConsistencyConfig(weight=20.0)).settings(DIGITS)
    assert "consistency" not in type1  # a type1 model is not retrained for it


@pytest.mark.parametrize("training", ["consistency", "stability"])
@pytest.mark.parametrize("noise", ["dssn", "laplace"])
def test_consistency_and_stability_train_digits_models(tmp_path, noise, training, type1_run):
    """A real (short) training run of each new objective, for DSSN (its copies are splits of
    the model's template) and Laplace: a usable model, unlike type1's."""
    config = _config(training=training, noise=noise, epochs=3, lr_step=2)
    metrics = train(config, tmp_path / "run", DIGITS, device="cpu")
    assert metrics["noise_accuracy"] > 0.5
    model, meta = load_model(tmp_path / "run" / "model.pt")
    assert meta["training"] == training and training in meta
    if noise == "laplace":
        reference, _ = load_model(type1_run[0] / "model.pt")
        assert not any(torch.equal(a, b) for a, b in
                       zip(model.parameters(), reference.parameters(), strict=True))  # fmt: skip
