"""Reading certify files, certified-accuracy tables, envelopes, metrics and bad input."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_certify_file

from l1cert import certify_format as fmt
from l1cert.analysis import (
    accuracy_rows,
    certified_accuracy,
    envelopes,
    radius_grid,
    read_all,
    read_certificates,
)
from l1cert.cli import main
from l1cert.report import expected_outputs
from l1cert.utils import L1CertError

DATA = Path(__file__).parent / "data"
HAND_MADE = DATA / "certify" / "digits" / "laplace-type1-s0.5.tsv"
COHEN = DATA / "cohen" / "cifar10" / "noise_0.25" / "test" / "sigma_0.25"
RADII = [0.0, 0.25, 0.5, 1.0]

# The hand-made file, by eye: six points; idx 2 abstains, idx 3 is wrong (radius 1.0 must not
# count). Correct points have radii teng (0.8, 0.3, 0.25, 1.5), lecuyer (0.5, 0.2, 0.1, 1.0),
# teng_multiclass (0.6, 0.0, 0.2, 1.2).
EXPECTED = {
    "teng": {"acc": [4 / 6, 4 / 6, 2 / 6, 1 / 6], "acr": (0.8 + 0.3 + 0.25 + 1.5) / 6},
    "lecuyer": {"acc": [4 / 6, 2 / 6, 2 / 6, 1 / 6], "acr": (0.5 + 0.2 + 0.1 + 1.0) / 6},
    "teng_multiclass": {"acc": [4 / 6, 2 / 6, 2 / 6, 1 / 6], "acr": (0.6 + 0.0 + 0.2 + 1.2) / 6},
}


def synthetic_file(
    path: Path, noise: str, sigma: float, points: int = 40, seed: int = 0, training: str = "type1"
) -> Path:
    """A certify file in our format with random radii (for properties, not exact numbers)."""
    from l1cert.noise import NOISES

    rng = np.random.default_rng(seed)
    rows = []
    for idx in range(points):
        label = int(rng.integers(9))
        predict = -1 if rng.random() < 0.15 else (label if rng.random() < 0.8 else label + 1)
        radii = {
            f"radius_{b}": 0.0 if predict == -1 else float(rng.exponential(sigma))
            for b in NOISES[noise].bounds
        }
        rows.append(
            {
                "idx": idx,
                "label": label,
                "predict": predict,
                "correct": int(predict == label),
                **radii,
            }
        )
    return write_certify_file(path, noise, sigma, rows, dataset=path.parent.name, training=training)


def synthetic_grid(root: Path, dataset: str = "digits") -> list[Path]:
    return [
        synthetic_file(
            root / dataset / f"{noise}-{training}-s{sigma}.tsv",
            noise,
            sigma,
            seed=seed,
            training=training,
        )
        for seed, (noise, training, sigma) in enumerate(
            (n, t, s)
            for n in ("laplace", "gaussian", "uniform")
            for t in ("type1", "type2")
            for s in (0.25, 0.5, 1.0)
        )
    ]


# --- reading ------------------------------------------------------------------------------


def test_hand_made_file_is_read_with_its_identity():
    run = read_certificates(HAND_MADE)
    assert (run.dataset, run.noise, run.training, run.sigma) == ("digits", "laplace", "type1", 0.5)
    assert run.model == "laplace-type1-s0.5"
    assert (run.n0, run.n, run.alpha) == (100, 1000, 0.001)
    assert run.bounds == ("teng", "lecuyer", "teng_multiclass")
    assert run.correct.tolist() == [True, True, False, False, True, True]


def test_identity_comes_from_the_sidecar_not_the_path(tmp_path):
    target = tmp_path / "cifar10" / "gaussian-type1-s0.25.tsv"
    target.parent.mkdir()
    shutil.copy(HAND_MADE, target)
    side = json.loads(HAND_MADE.with_suffix(".json").read_text())
    side.update(training="type2", model_name="imported-resnet")
    target.with_suffix(".json").write_text(json.dumps(side))
    run = read_certificates(target)
    assert (run.dataset, run.noise, run.training, run.model) == (
        "digits",
        "laplace",
        "type2",
        "imported-resnet",
    )


def test_our_file_without_its_sidecar_is_refused(tmp_path):
    target = tmp_path / "laplace-type1-s0.5.tsv"
    shutil.copy(HAND_MADE, target)
    with pytest.raises(L1CertError, match="without its sidecar"):
        read_certificates(target)


def test_a_tsv_that_does_not_match_its_sidecar_is_refused(tmp_path):
    target = tmp_path / "laplace-type1-s0.5.tsv"
    shutil.copy(HAND_MADE.with_suffix(".json"), target.with_suffix(".json"))
    lines = HAND_MADE.read_text().splitlines(keepends=True)
    target.write_text("".join(lines[:-1]))  # a row fewer than the sidecar says
    with pytest.raises(L1CertError, match="does not match its sidecar"):
        read_certificates(target)


def test_cohen_six_column_file_is_gaussian_cohen_with_sigma_from_path():
    run = read_certificates(COHEN)
    assert (run.dataset, run.noise, run.sigma, run.bounds) == (
        "cifar10",
        "gaussian",
        0.25,
        ("cohen",),
    )
    assert run.training == "unknown"
    # Correct points: radii 0.5 and 0.1 of four; the wrong one (0.3) must not count.
    assert certified_accuracy(run.bound_radii["cohen"], run.correct, [0, 0.2, 0.4]).tolist() == [
        0.5,
        0.25,
        0.25,
    ]


def test_cohen_file_takes_dataset_and_label_from_the_caller(tmp_path):
    target = tmp_path / "sigma_0.25"
    shutil.copy(COHEN, target)
    run = read_certificates(target, dataset="cifar10", label="cohen")
    assert (run.dataset, run.training, run.noise, run.model) == (
        "cifar10",
        "cohen",
        "gaussian",
        "gaussian-cohen-s0.25",
    )
    assert read_certificates(target).dataset == "unknown"  # nothing in its path says


# --- tables, metrics, envelope ------------------------------------------------------------


def test_table_numbers_match_hand_computation():
    rows = accuracy_rows([read_certificates(HAND_MADE)], RADII)
    assert [r.bound for r in rows] == ["teng", "lecuyer", "teng_multiclass"]
    for row in rows:
        assert row.clean_accuracy == pytest.approx(4 / 6)
        assert row.abstention_rate == pytest.approx(1 / 6)
        assert row.acr == pytest.approx(EXPECTED[row.bound]["acr"])
        assert row.accuracy == pytest.approx(EXPECTED[row.bound]["acc"])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One report over the hand-made file, Cohen et al.'s file and a synthetic grid."""
    root = tmp_path_factory.mktemp("report")
    files = [HAND_MADE, COHEN, *synthetic_grid(root / "certify", dataset="synth")]
    out, metrics = root / "results", root / "elsewhere" / "metrics.json"
    result = CliRunner().invoke(
        main,
        [
            "report",
            *map(str, files),
            "--out-dir",
            str(out),
            "--radii",
            "0,0.25,0.5,1",
            "--metrics",
            str(metrics),
        ],
    )
    assert result.exit_code == 0, result.output
    return out, metrics, result.stderr


def test_report_files_hold_the_hand_computed_numbers(built):
    out, metrics_path, log = built
    assert f"read {HAND_MADE}: " in log and f"wrote {metrics_path}" in log

    with open(out / "tables" / "certified-accuracy.csv") as f:
        table = {row["bound"]: row for row in csv.DictReader(f) if row["dataset"] == "digits"}
    for bound, expected in EXPECTED.items():
        row = table[bound]
        assert float(row["clean_accuracy"]) == pytest.approx(4 / 6, rel=1e-5)
        assert float(row["abstention_rate"]) == pytest.approx(1 / 6, rel=1e-5)
        assert float(row["acr"]) == pytest.approx(expected["acr"], rel=1e-5)
        got = [float(row[f"r={r:g}"]) for r in RADII]
        assert got == pytest.approx(expected["acc"], rel=1e-5)

    metrics = json.loads(metrics_path.read_text())
    teng = metrics["digits/laplace-type1-s0.5/teng"]
    assert teng["points"] == 6
    assert teng["certified_accuracy"]["0.5"] == pytest.approx(2 / 6, abs=1e-6)
    assert teng["acr"] == pytest.approx(0.475, abs=1e-6)
    assert metrics["cifar10/gaussian-unknown-s0.25/cohen"]["certified_accuracy"]["0.25"] == 0.25

    markdown = (out / "tables" / "certified-accuracy.md").read_text().splitlines()
    assert markdown[0].startswith("| dataset |")
    hand = [line for line in markdown if line.startswith("| digits | laplace-type1-s0.5 |")]
    assert "| 66.7 | 16.7 | 0.475 | 66.7 | 66.7 | 33.3 | 16.7 |" in hand[0]
    # its cost: n0 + n = 1 100 forward passes per point, 0.5 s each, training not recorded
    assert hand[0].endswith("| 1,100 | 6,600 | 3 | - |")
    latex = (out / "tables" / "certified-accuracy.tex").read_text()
    assert all(rule in latex for rule in (r"\toprule", r"\midrule", r"\bottomrule"))
    assert r"digits & laplace-type1-s0.5 & laplace & type1 & 0.5 & teng\_multiclass" in latex

    envelope = list(csv.DictReader(open(out / "tables" / "envelope.csv")))
    digits = [r for r in envelope if r["dataset"] == "digits" and r["bound"] == "teng"]
    assert [float(r["certified_accuracy"]) for r in digits] == pytest.approx(
        EXPECTED["teng"]["acc"], rel=1e-5
    )
    assert {r["sigma"] for r in digits} == {"0.5"}


def test_expected_outputs_is_exactly_what_is_written(built):
    out, metrics, _ = built
    lock = out / ".report.lock"  # stays, as every lock file of l1cert does; not an output
    written = {p for p in out.rglob("*") if p.is_file() and p != lock} | {metrics}
    assert written == set(expected_outputs(out, ["digits", "cifar10", "synth"], metrics))
    assert lock.is_file() and lock.read_text() == ""  # released


def test_plot_csv_matches_the_curves(built):
    out, _, _ = built
    with open(out / "plots" / "digits-teng.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["radius", "laplace-type1-s0_5"]
    curve = {float(r["radius"]): float(r["laplace-type1-s0_5"]) for r in rows}
    assert curve[0.0] == pytest.approx(4 / 6, rel=1e-5)
    assert curve[1.5] == pytest.approx(1 / 6, rel=1e-5) and max(curve) >= 1.5
    with open(out / "plots" / "certified-accuracy.csv") as f:
        long = [
            r
            for r in csv.DictReader(f)
            if (r["dataset"], r["model"]) == ("digits", "laplace-type1-s0.5")
        ]
    assert {r["bound"] for r in long} == set(EXPECTED) and len(long) == 3 * len(rows)


def test_captions_state_the_certification_settings(built):
    out, _, _ = built
    caption = (out / "captions" / "digits-certified-accuracy.rst").read_text()
    assert "n = 1000, n0 = 100, α = 0.001" in caption
    assert "sigma = 0.5" in (out / "captions" / "radius-vs-pa.rst").read_text()


def test_curves_are_non_increasing_and_envelope_dominates(tmp_path):
    runs = read_all(synthetic_grid(tmp_path))
    grid = radius_grid(runs)
    assert grid[0] == 0 and np.all(np.diff(grid) > 0)
    for run in runs:
        for radius in run.bound_radii.values():
            curve = certified_accuracy(radius, run.correct, grid)
            assert np.all(np.diff(curve) <= 0)
            assert curve[-1] == 0  # the grid reaches past every radius
    envs = envelopes(runs, grid)
    assert len(envs) == 2 * 5  # training types × bounds
    for env in envs:
        assert [m.sigma for m in env.members] == [0.25, 0.5, 1.0]
        for member in env.members:
            curve = certified_accuracy(member.bound_radii[env.bound], member.correct, grid)
            assert np.all(env.accuracy >= curve)
        achieved = [
            certified_accuracy(b.bound_radii[env.bound], b.correct, [r])[0] if b else 0.0
            for b, r in zip(env.best, grid, strict=True)
        ]
        assert env.accuracy == pytest.approx(achieved)


# --- bad input ----------------------------------------------------------------------------


def _edit(text: str, case: str) -> str:
    lines = text.splitlines(keepends=True)
    if case == "empty":
        return ""
    if case == "header only":
        return lines[0]
    if case == "short row":
        return "".join(lines[:3]) + "\t".join(lines[3].split("\t")[:7]) + "\n" + "".join(lines[4:])
    if case == "torn last line":
        return text[:-5]
    if case == "mixed sigma":
        return "".join(lines[:-1]) + lines[-1].replace("\t0.5\t0.353553\t", "\t0.25\t0.353553\t")
    if case == "mixed n":
        return "".join(lines[:-1]) + lines[-1].replace("\t100\t1000\t", "\t100\t2000\t")
    if case == "missing column":
        drop = lines[0].split("\t").index("radius_lecuyer")
        return "".join(
            "\t".join(f for i, f in enumerate(line.rstrip("\n").split("\t")) if i != drop) + "\n"
            for line in lines
        )
    if case == "not a number":
        return "".join(lines[:-1]) + lines[-1].replace("\t1.5\t1.0\t", "\tx\t1.0\t", 1)
    raise AssertionError(case)


BAD_CASES = {
    "empty": "empty",
    "header only": "no certified points",
    "short row": ":4: malformed row (7 fields",
    "torn last line": "truncated",
    "mixed sigma": "mixed settings: column sigma",
    "mixed n": "mixed settings: column n ",
    "missing column": "missing column(s) radius_lecuyer",
    "not a number": "radius_teng 'x' is not a radius",
}


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_file_gives_one_line_naming_file_and_problem(tmp_path, case):
    bad = tmp_path / "digits" / "laplace-type1-s0.5.tsv"
    bad.parent.mkdir()
    bad.write_text(_edit(HAND_MADE.read_text(), case))
    side = json.loads(HAND_MADE.with_suffix(".json").read_text())
    if bad.read_text().endswith("\n") and bad.read_text().count("\n") > 1:
        side = fmt.seal(bad, side, bad.read_text().count("\n") - 1)  # the rows are the test
    bad.with_suffix(".json").write_text(json.dumps(side))
    result = CliRunner().invoke(main, ["report", str(bad), "--out-dir", str(tmp_path / "o")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()  # progress lines, then the error
    errors = [line for line in lines if line.startswith("l1cert: error: ")]
    assert errors == lines[-1:] and "Traceback" not in result.stderr
    assert str(bad) in errors[0] and BAD_CASES[case] in errors[0]
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_sidecar_disagreeing_with_rows_is_mixed_settings(tmp_path):
    target = tmp_path / "digits" / "laplace-type1-s0.5.tsv"
    target.parent.mkdir()
    shutil.copy(HAND_MADE, target)
    side = json.loads(HAND_MADE.with_suffix(".json").read_text())
    target.with_suffix(".json").write_text(json.dumps({**side, "sigma": 0.25}))
    result = CliRunner().invoke(main, ["report", str(target), "--out-dir", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "mixed settings" in result.stderr and "sigma" in result.stderr


def test_same_model_twice_is_refused(tmp_path):
    copy = tmp_path / "x" / "digits" / "laplace-type1-s0.5.tsv"
    copy.parent.mkdir(parents=True)
    shutil.copy(HAND_MADE, copy)
    shutil.copy(HAND_MADE.with_suffix(".json"), copy.with_suffix(".json"))
    result = CliRunner().invoke(
        main, ["report", str(HAND_MADE), str(copy), "--out-dir", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "same dataset and model" in result.stderr


def test_real_cli_process_exit_code_and_single_line(tmp_path):
    bad = tmp_path / "empty.tsv"
    bad.write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "l1cert.cli", "report", str(bad), "--out-dir", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"l1cert: error: {bad}: empty file (no header, no rows)"
    )
    assert "Traceback" not in done.stderr


def test_bad_radii_option(tmp_path):
    result = CliRunner().invoke(
        main, ["report", str(HAND_MADE), "--out-dir", str(tmp_path), "--radii", "0,abc"]
    )
    assert result.exit_code == 2 and "--radii" in result.stderr


def test_a_report_killed_before_leaves_no_staging_behind(tmp_path):
    out = tmp_path / "o"
    stale = out / ".report-staging-killed"
    (stale / "tables").mkdir(parents=True)  # what a SIGKILL mid-report leaves
    result = CliRunner().invoke(main, ["report", str(HAND_MADE), "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert not stale.exists() and not list(out.glob(".report-staging-*"))
    assert (out / "tables" / "certified-accuracy.csv").read_text().startswith("dataset,")


def test_a_fixed_and_a_sequential_run_of_one_model_are_not_mixed(tmp_path):
    fixed = synthetic_file(tmp_path / "a" / "digits" / "laplace-type1-s0.5.tsv", "laplace", 0.5)
    sequential = tmp_path / "b" / "digits" / "laplace-type1-s0.5.tsv"
    rows = [{"idx": 0, "label": 3, "predict": 3, "correct": 1, "radius_teng": 0.3,
             "radius_lecuyer": 0.2, "radius_teng_multiclass": 0.3}]  # fmt: skip
    write_certify_file(sequential, "laplace", 0.5, rows, sampling="sequential", radii=[0, 0.25])
    with pytest.raises(L1CertError, match="a sequential and a fixed run .* report them separately"):
        read_all([fixed, sequential])
