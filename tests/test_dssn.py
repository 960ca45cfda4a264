"""Splitting noise through the pipeline: SSN's Monte Carlo certificate, DSSN's template in the
checkpoint, exact certification by `l1cert certify` (rows, shards, resume, refusals), straight-
through Type 2, and published result directories in the report. The math of the splits and
the brute-force soundness of the DSSN radius are in tests/test_splitting.py."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import read_table, run_cli, without_time
from test_smoothing import HalfSpace

from l1cert import data, models, splitting
from l1cert.certify import certify_to_tsv
from l1cert.cli import main
from l1cert.config import DataConfig, TrainConfig, Type2Config
from l1cert.grid import half_width
from l1cert.noise import make_noise
from l1cert.points import SELECTION, Draws
from l1cert.resume import partial_path
from l1cert.smoothing import Smooth
from l1cert.train import train
from l1cert.utils import L1CertError

torch.set_num_threads(1)
SIGMA = 0.5
L = 27  # floor(2·√3·0.5·16): digits' grid q = 16
FAST = dict(batch=200, max=40, progress=False)
DIGITS = DataConfig(dataset="digits")


def _config(**changes):
    base = dict(arch="digits_mlp", noise="dssn", sigma=SIGMA, epochs=3)
    return TrainConfig(**{**base, "lr_step": 2, **changes})


@pytest.fixture(scope="module")
def dssn_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("dssn")
    with torch.random.fork_rng():
        train(_config(), out, DIGITS, device="cpu")
    return out / "model.pt"


# --- SSN: Monte Carlo like the other noises ------------------------------------------------


def test_ssn_certifies_a_half_space_soundly():
    """f = 1[x_0 > 0.25] under splitting noise: the SSN radius ρ = 2λ(p̲A − ½) is covered by
    the smoothed classifier's own probability, which stays above ½ at x − ρ·e_0."""
    smooth = Smooth(HalfSpace(0.25), 2, "split", 0.2, channels_last=False)
    lam = smooth.noise.scale
    x = torch.tensor([0.75, 0.5, 0.5])
    cert = smooth.certify(x, 100, 20_000, 0.001, 5000, seed=0)
    assert cert.prediction == 1 and list(cert.bound_radii) == ["ssn", "ssn_box"]
    assert cert.radius == pytest.approx(2 * lam * (cert.pa_lower - 0.5))
    moved = x.clone()
    moved[0] -= cert.radius * 0.999
    counts = smooth._count(moved, 20_000, 5000, Draws(1, smooth.device), SELECTION)
    assert counts[1] / 20_000 > 0.5  # still predicted: the certificate holds


def test_split_draws_are_cell_middles():
    noise = make_noise("split", 0.3)
    x = torch.rand(4, 64, generator=torch.Generator().manual_seed(0))
    out = noise.perturb_(torch.empty(4, 64), x, torch.Generator().manual_seed(1))
    lam = noise.scale
    assert torch.all((out >= 0) & (out <= 1))
    assert torch.all((out - x).abs() <= 2 * lam + 1e-6)  # within its cell
    assert not torch.equal(out, x)


# --- DSSN: the template is part of the model ------------------------------------------------


def test_template_round_trips_through_the_checkpoint(dssn_model):
    model, meta, state = models.load_model_and_noise(dssn_model)
    template = state["template"]
    lam = half_width(SIGMA, 16)
    assert torch.equal(template, splitting.make_template([1, 8, 8], lam, 16, seed=0))
    # weights_only=True loads it: plain tensors only
    raw = torch.load(dssn_model, weights_only=True)
    assert torch.equal(raw["noise_state"]["template"], template)
    assert meta["grid"] == 16 and meta["noise"] == "dssn"


def test_exact_certify_writes_counts_of_all_L_copies(dssn_model, tmp_path):
    out = certify_to_tsv(dssn_model, tmp_path / "run.tsv", **FAST)
    rows = read_table(out)
    side = json.loads(out.with_suffix(".json").read_text())["result"]
    assert side["sampling"] == "exact" and side["copies"] == L and side["grid"] == 16
    assert side["n0"] is None and side["alpha"] is None and side["n"] == L
    assert list(rows[0])[:6] == ["idx", "label", "predict", "radius", "correct", "time"]
    model, meta, state = models.load_model_and_noise(dssn_model)
    test = data.load_split("digits", "test")
    xs = torch.stack([test[int(r["idx"])][0] for r in rows])
    lam = half_width(SIGMA, 16)
    naive = torch.zeros(len(rows), 10, dtype=torch.long)  # one offset at a time, one point
    for j, offsets in enumerate(splitting.dssn_offsets(state["template"], lam, 16)):
        with torch.no_grad():
            labels = model(splitting.split(xs, offsets, lam)).argmax(1)
        naive[torch.arange(len(rows)), labels] += 1
        assert j < L
    found = splitting.dssn_certify(naive, 16)
    for i, row in enumerate(rows):
        assert int(row["n"]) == L and row["n0"] == "0" and row["alpha"] == "0"
        assert int(row["count"]) == naive[i].max() == found.count[i]
        assert float(row["pa_lower"]) == pytest.approx(int(row["count"]) / L)
        assert float(row["radius"]) == float(row["radius_dssn"]) == found.radius[i]
        assert int(row["predict"]) == found.predict[i] != -1  # never abstains
        assert int(row["count_b"]) == found.count_b[i]


def test_shards_merge_to_one_run_and_report_reads_it(dssn_model, tmp_path):
    one = certify_to_tsv(dssn_model, tmp_path / "one.tsv", **FAST)
    shards = [
        certify_to_tsv(dssn_model, tmp_path / f"s{k}.tsv", shard=(k, 3), **FAST) for k in (1, 2, 3)
    ]
    code, message = run_cli("merge", *shards, "--out", tmp_path / "merged.tsv")
    assert code == 0, message
    assert without_time(read_table(tmp_path / "merged.tsv")) == without_time(read_table(one))
    code, message = run_cli("report", tmp_path / "merged.tsv", "--out-dir", tmp_path / "r")
    assert code == 0, message
    with open(tmp_path / "r" / "tables" / "certified-accuracy.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["bound"] == "dssn" and float(row["passes_mean"]) == L
    caption = (tmp_path / "r" / "captions" / "certified-accuracy.rst").read_text()
    assert "exact" in caption and "input grid" in caption


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (Debian's strace)")
def test_resume_after_sigkill(dssn_model, tmp_path):
    """SIGKILL a real `l1cert certify` at its 40th write (exact certification is too quick to
    catch by the clock), tear its last line, rerun: the table of one uninterrupted run."""
    out = tmp_path / "killed.tsv"
    partial = partial_path(out)
    command = [sys.executable, "-m", "l1cert.cli", "certify", "--model", str(dssn_model),
               "--batch", str(L), "--threads", "1", "--out", str(out)]  # fmt: skip
    kill = ["strace", "-f", "-qq", "-o", os.devnull, "-e", "trace=write",
            "-e", "inject=write:signal=KILL:when=40"]  # fmt: skip
    subprocess.run(kill + command, stderr=subprocess.DEVNULL, check=False)
    done_before = len(partial.read_text().splitlines()) - 1
    assert 1 <= done_before < 360 and not out.exists(), "the run must be killed mid-way"
    with open(partial, "a") as f:
        f.write("28\t4\t")
    subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
    resumed = read_table(out)
    assert [int(r["idx"]) for r in resumed] == list(range(360))
    reference = certify_to_tsv(dssn_model, tmp_path / "reference.tsv", batch=L, progress=False)
    assert without_time(resumed) == without_time(read_table(reference))


# --- DSSN: refusals, one line each -----------------------------------------------------------


def _assert_refused(code, message, fragment):
    assert code == 2, message
    assert message.startswith("l1cert: error: ") and "\n" not in message
    assert fragment in message, message


@pytest.mark.parametrize(
    "options, fragment",
    [
        (
            ["--sampling", "sequential", "--radii", "0,0.5"],
            "--sampling sequential does not apply to dssn",
        ),
        (["--radii", "0,0.5"], "--radii does not apply to dssn"),
        (["--seed", "3"], "--seed does not apply to dssn"),
        (["--n", "1000"], "--n does not apply to dssn"),
        (["--alpha", "0.01"], "--alpha does not apply to dssn"),
        (["--n0", "10"], "--n0 does not apply to dssn"),
        (["--sigma", "0.02"], "need L >= 2"),
    ],
)
def test_options_that_mean_nothing_are_refused(dssn_model, tmp_path, options, fragment):
    code, message = run_cli("certify", "--model", dssn_model, *options, "--out", tmp_path / "o.tsv")
    _assert_refused(code, message, fragment)
    assert not (tmp_path / "o.tsv").exists()


def test_radii_are_set_aside_by_fixed_sampling_and_refused_by_exact(dssn_model, tmp_path):
    """The pipeline passes an exact noise no sampling options, so it has nothing to set aside:
    --radii is refused like --n. A fixed-sampling run (the same model under split noise) given
    the radii of a pipeline written for sequential sampling sets them aside with a note."""
    out = tmp_path / "o.tsv"
    code, message = run_cli("certify", "--model", dssn_model, "--radii", "0,0.5", "--max", "5",
                            "--out", out)  # fmt: skip
    _assert_refused(code, message, "--radii does not apply to dssn noise under exact")
    assert not out.exists()
    args = ["certify", "--model", dssn_model, "--noise", "split", "--n0", "10", "--n", "100",
            "--radii", "0,0.5", "--max", "5", "--out", out]  # fmt: skip
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "l1cert certify: fixed sampling sets --radii aside" in result.stderr
    side = json.loads(out.with_suffix(".json").read_text())["result"]
    assert side["noise"] == "split" and side["sampling"] == "fixed" and side["n"] == 100
    assert side["radii"] is None and side["looks"] is None


def _save_dssn(path, template):
    info = data.dataset_info("digits")
    torch.manual_seed(0)
    model = models.build_model("digits_mlp", 10, info.input_shape, info.mean, info.std)
    meta = dict(arch="digits_mlp", dataset="digits", num_classes=10, input_shape=[1, 8, 8],
                mean=info.mean, std=info.std, noise="dssn", sigma=SIGMA, training="type1",
                type2=None, epochs=0, seed=0, grid=16)  # fmt: skip
    models.save_model(path, model, meta, None if template is None else {"template": template})
    return path


@pytest.mark.parametrize(
    "template, fragment",
    [
        (None, "needs its template"),
        (torch.zeros(1, 4, 4), "template has shape [1, 4, 4]"),
        (torch.full((1, 8, 8), 0.3), "template must hold multiples of 1/16"),
    ],
)
def test_a_checkpoint_without_its_template_is_refused(tmp_path, template, fragment):
    path = _save_dssn(tmp_path / "model.pt", template)
    code, message = run_cli("certify", "--model", path, "--out", tmp_path / "o.tsv")
    _assert_refused(code, message, fragment)


def test_off_grid_inputs_are_refused_naming_the_point():
    lam = half_width(SIGMA, 16)
    noise = make_noise("dssn", SIGMA, 16, splitting.make_template([4], lam, 16, seed=1))
    smooth = Smooth(HalfSpace(0.5), 2, noise, channels_last=False)
    on = torch.tensor([0.5, 0.25, 0.0, 1.0])
    ((idx, cert),) = smooth.certify_exact([(3, on)], 64)
    assert idx == 3 and cert.n == noise.copies == L
    with pytest.raises(L1CertError, match="^test point idx 7 is not on the grid k/16"):
        list(smooth.certify_exact([(3, on), (7, torch.tensor([0.3, 0.25, 0.0, 1.0]))], 64))


def test_merge_refuses_dssn_shards_of_another_template(tmp_path):
    lam = half_width(SIGMA, 16)
    paths = []
    for seed in (0, 1):
        model = _save_dssn(
            tmp_path / f"m{seed}.pt", splitting.make_template([1, 8, 8], lam, 16, seed)
        )
        paths.append(certify_to_tsv(model, tmp_path / f"s{seed}.tsv", shard=(seed + 1, 2), **FAST))
    code, message = run_cli("merge", *paths, "--out", tmp_path / "merged.tsv")
    _assert_refused(code, message, "disagree on")
    assert not (tmp_path / "merged.tsv").exists()


# --- Type 2 through the split: straight-through -------------------------------------------------


def test_type2_attacks_through_the_split_and_changes_the_model(tmp_path):
    type2 = Type2Config(norm="linf", epsilon=0.1, steps=2, samples=2, warmup_epochs=0)
    with torch.random.fork_rng():
        train(_config(epochs=2), tmp_path / "t1", DIGITS, device="cpu")
        t2 = _config(epochs=2, training="type2", type2=type2)
        train(t2, tmp_path / "t2", DIGITS, device="cpu")
    one, _ = models.load_model(tmp_path / "t1" / "model.pt")
    two, _ = models.load_model(tmp_path / "t2" / "model.pt")
    differ = [
        not torch.equal(a, b) for a, b in zip(one.parameters(), two.parameters(), strict=True)
    ]
    assert all(differ)
    # the attack moves the input despite the split's zero gradient
    from l1cert.attacks import smoothadv_pgd

    noise = make_noise("split", SIGMA)
    x = torch.full((4, 1, 8, 8), 0.5)
    draws = noise.draw((2, *x.shape), x, torch.Generator().manual_seed(0))
    moved = smoothadv_pgd(one, x, torch.zeros(4, dtype=torch.long), draws, "linf", 0.1, 2,
                          apply=noise.apply)  # fmt: skip
    assert (moved - x).abs().max() > 0.05


# --- published results beside ours -----------------------------------------------------------


def test_report_reads_an_rs4a_directory(tmp_path):
    folder = tmp_path / "levine" / "cifar10" / "noise_0.5"
    folder.mkdir(parents=True)
    np.save(folder / "labels.npy", np.array([0.0, 1, 2, 3, 4, 5, 6, 7]))  # rs4a: floats
    scores = np.eye(10)[[0, 1, 2, 3, 4, 5, 0, 9]]  # preds.npy: class scores, argmax
    np.save(folder / "preds.npy", scores)
    np.save(folder / "radius_l1.npy", np.array([0.1, 0.5, 1.0, 2.0, 0.3, -0.2, 1.0, 0.0]))
    out = tmp_path / "report"
    # σ from the directory's own name; the dataset named by the folder above is not read
    code, message = run_cli("report", folder, "--label", "levine", "--bound", "dssn",
                            "--out-dir", out, "--radii", "0,0.25,0.5,1")  # fmt: skip
    _assert_refused(code, message, "its name does not say its dataset; give it with --dataset")
    code, message = run_cli("report", folder, "--label", "levine", "--bound", "dssn",
                            "--dataset", "cifar10", "--out-dir", out,
                            "--radii", "0,0.25,0.5,1")  # fmt: skip
    assert code == 0, message
    with open(out / "tables" / "certified-accuracy.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["dataset"], row["training"], row["sigma"], row["bound"]) == (
        "cifar10", "levine", "0.5", "dssn",
    )  # fmt: skip
    # by hand: correct are images 0..5; their radii 0.1, 0.5, 1, 2, 0.3, −0.2 (certified at none)
    got = [float(row[f"r={r}"]) for r in ("0", "0.25", "0.5", "1")]
    assert got == pytest.approx([5 / 8, 4 / 8, 3 / 8, 2 / 8])
    assert float(row["clean_accuracy"]) == pytest.approx(6 / 8)
    assert row["passes_mean"] == ""  # their cost is not recorded
    code, message = run_cli("report", folder, "--out-dir", out)
    _assert_refused(code, message, "--bound")
