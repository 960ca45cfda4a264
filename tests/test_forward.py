import numpy as np
import pytest
import torch
import torch.nn.functional as F

from l1cert.data import dataset_info, load_split
from l1cert.forward import BaseClassifier, should_compile
from l1cert.models import build_model
from l1cert.noise import make_noise
from l1cert.points import SELECTION, Draws
from l1cert.smoothing import Smooth
from l1cert.utils import L1CertError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits_mlp():
    """The default pipeline's digits MLP, trained on noisy digits for a few full-batch steps."""
    torch.manual_seed(0)
    info = dataset_info("digits")
    model = build_model("digits_mlp", 10, info.input_shape, info.mean, info.std)
    train = load_split("digits", "train")
    x, y = train.images, train.labels.long()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    noise = make_noise("laplace", 0.5)
    for _ in range(60):
        loss = F.cross_entropy(model(x + noise.sample_(torch.empty_like(x))), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), load_split("digits", "test").images


@pytest.fixture(scope="module")
def compiled(digits_mlp):
    return BaseClassifier(digits_mlp[0], batch_size=500, compile=True)


@pytest.mark.slow
def test_compiled_votes_agree_with_eager(digits_mlp, compiled):
    model, test_images = digits_mlp
    eager = BaseClassifier(model, batch_size=500)
    bf16 = BaseClassifier(model, batch_size=500, precision="bf16")
    noise, gen = make_noise("laplace", 0.5), torch.Generator().manual_seed(0)
    same = same_bf16 = total = 0
    with torch.inference_mode():
        for x in test_images[:40]:  # 40 points x 500 draws
            batch = noise.perturb_(torch.empty(500, *x.shape), x, gen)
            votes = eager(batch)
            same += int((compiled(batch) == votes).sum())
            same_bf16 += int((bf16(batch) == votes).sum())
            total += len(batch)
    assert compiled.compiled  # really compiled, not fallen back
    print(
        f"\nvotes agreeing with eager fp32 over {total} draws: compiled {same / total:.5f}, "
        f"bf16 {same_bf16 / total:.5f}"
    )
    assert same / total >= 0.999
    assert same_bf16 / total >= 0.98  # bf16 is another f: a few votes near the boundary move


@pytest.mark.slow
def test_padded_short_batches_count_like_eager(digits_mlp, compiled):
    model, test_images = digits_mlp
    x = test_images[3]
    for n in (123, 1130):  # shorter than one batch; and two full batches plus a short one
        counts = [
            Smooth(f, 10, "laplace", 0.5)._count(x, n, 500, Draws(n, "cpu"), SELECTION)
            for f in (compiled, model)
        ]
        assert counts[0].sum() == n
        assert np.array_equal(counts[0], counts[1])


def test_one_graph_for_every_batch_size(digits_mlp, monkeypatch):
    """Short batches are padded to the fixed shape: compiled once, never again."""
    shapes = []
    real_compile = torch.compile

    def recording_backend(graph, inputs):
        shapes.extend(tuple(t.shape) for t in inputs if t.dim() == 4)  # the batch
        return graph.forward

    monkeypatch.setattr(
        torch, "compile", lambda m, **kw: real_compile(m, backend=recording_backend, **kw)
    )
    torch._dynamo.reset()
    f = BaseClassifier(digits_mlp[0], batch_size=64, compile=True)
    with torch.inference_mode():
        for size in (64, 10, 64, 1, 37):
            assert f(torch.rand(size, 1, 8, 8)).shape == (size,)
    assert shapes == [(64, 1, 8, 8)]


@pytest.mark.parametrize("where", ["at the first call", "in the backend"])
def test_compile_failure_falls_back_with_one_warning(digits_mlp, monkeypatch, capsys, where):
    model = digits_mlp[0]
    real_compile = torch.compile

    def failing_backend(graph, inputs):
        raise RuntimeError("no C compiler found\nsecond line of the traceback")

    def broken(*args, **kwargs):
        raise RuntimeError("no C compiler found\nsecond line")

    if where == "at the first call":
        monkeypatch.setattr(torch, "compile", lambda m, **kw: broken)
    else:
        monkeypatch.setattr(
            torch, "compile", lambda m, **kw: real_compile(m, backend=failing_backend, **kw)
        )
    torch._dynamo.reset()
    f = BaseClassifier(model, batch_size=32, compile=True)
    batch = torch.rand(32, 1, 8, 8)
    with torch.inference_mode():
        first, second = f(batch), f(batch[:5])
        expected = model(batch).argmax(1)
    assert not f.compiled
    assert torch.equal(first, expected) and torch.equal(second, expected[:5])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "warning: torch.compile failed" in lines[0]
    assert "no C compiler found" in lines[0]


def test_bf16_counts_on_cpu(digits_mlp):
    model, test_images = digits_mlp
    f = BaseClassifier(model, batch_size=100, precision="bf16")
    counts = Smooth(f, 10, "laplace", 0.5)._count(
        test_images[0], 250, 100, Draws(0, "cpu"), SELECTION
    )
    assert counts.sum() == 250


def test_should_compile():
    cpu = torch.device("cpu")
    assert should_compile("auto", 90, 10_100, cpu)[0] is False  # the default digits job
    on, reason = should_compile("auto", 100, 100_000, torch.device("cuda", 0))  # a CIFAR shard
    assert on and "10,000,000 draws" in reason
    assert should_compile("auto", 100, 100_000, cpu)[0]
    assert (
        should_compile("auto", 200, 10_000, "cpu")[0] and not should_compile("auto", 1, 1, "mps")[0]
    )
    assert should_compile("on", 1, 1, cpu)[0] and not should_compile("off", 10**6, 10**6, cpu)[0]


def test_bad_options_are_one_line_errors(digits_mlp):
    with pytest.raises(L1CertError, match=r"unknown compile mode 'yes' \(use auto, on, off\)"):
        should_compile("yes", 1, 1, "cpu")
    with pytest.raises(L1CertError, match=r"unknown precision 'fp16' \(use fp32, bf16\)"):
        BaseClassifier(digits_mlp[0], batch_size=8, precision="fp16")
    with pytest.raises(L1CertError, match="unknown precision"):
        Smooth(digits_mlp[0], 10, "laplace", 0.5, precision="half")
    with pytest.raises(L1CertError, match="batch size"):
        BaseClassifier(digits_mlp[0], batch_size=0)
