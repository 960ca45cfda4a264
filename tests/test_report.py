"""Reading certify files, certified-accuracy tables, envelopes, metrics and bad input."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import (
    HAND_MADE_ALPHA,
    HAND_MADE_CLASSES,
    HAND_MADE_N,
    HAND_MADE_ROWS,
    HAND_MADE_SIGMA,
    write_certify_file,
    write_grid,
    write_hand_made,
)
from scipy.stats import beta, norm

from l1cert import certify_format as fmt
from l1cert.analysis import accuracy_rows, certified_accuracy, envelopes, radius_axis
from l1cert.cli import main
from l1cert.layout import all_bounds, expected_outputs
from l1cert.metrics import headline
from l1cert.noise import NOISES
from l1cert.runs import Naming, read_run, read_runs
from l1cert.table_formats import latex_escape, to_markdown
from l1cert.utils import L1CertError

DATA = Path(__file__).parent / "data"
COHEN = DATA / "cohen" / "cifar10" / "noise_0.25" / "test" / "sigma_0.25"
CIFAR10 = Naming(dataset="cifar10")  # Cohen's file's own name gives its sigma, not its dataset
RADII = [0.0, 0.25, 0.5, 1.0]


# --- what the hand-made file holds, computed from its counts by hand ----------------------


def _cp_lower(k: int, n: int, alpha: float) -> float:
    """Clopper–Pearson: P(p >= bound) >= 1 - alpha."""
    return beta.ppf(alpha, k, n - k + 1) if k > 0 else 0.0


def _cp_upper(k: int, n: int, alpha: float) -> float:
    return beta.ppf(1 - alpha, k + 1, n - k) if k < n else 1.0


def hand_radii(noise, sigma, count, count_b, n=HAND_MADE_N, alpha=HAND_MADE_ALPHA,
               classes=HAND_MADE_CLASSES) -> dict[str, float]:  # fmt: skip
    """Each bound's radius by its closed form; 0 where it abstains. Theorem 1 splits alpha:
    p̲A at alpha/2, the runner-up at alpha/(2(K - 1)), p̄B capped at 1 - p̲A."""
    pa = _cp_lower(count, n, alpha)
    if noise == "gaussian":
        return {"cohen": sigma * norm.ppf(pa) if pa > 0.5 else 0.0}
    if noise == "uniform":
        return {"uniform": 2 * math.sqrt(3) * sigma * (pa - 0.5) if pa > 0.5 else 0.0}
    lam = sigma / math.sqrt(2)
    pa_joint = _cp_lower(count, n, alpha / 2)
    pb = min(_cp_upper(count_b, n, alpha / (2 * (classes - 1))), 1 - pa_joint)
    return {
        "teng": -lam * math.log(2 * (1 - pa)) if pa > 0.5 else 0.0,
        "lecuyer": lam / 2 * math.log(pa / (1 - pa)) if pa > 0.5 else 0.0,
        "teng_multiclass": (
            max(lam / 2 * math.log(pa_joint / pb), -lam * math.log(1 - pa_joint + pb))
            if pa_joint > pb
            else 0.0
        ),
    }


HAND = {idx: hand_radii("laplace", HAND_MADE_SIGMA, c, c_b) for idx, _, c, c_b, _ in HAND_MADE_ROWS}
CORRECT = [0, 1, 4, 5]  # idx 2 abstains, idx 3 is wrong: their radii must not count
assert all(r == 0 for r in HAND[2].values()) and all(r > 0.5 for r in HAND[3].values())


def hand_curve(bound: str, radii) -> list[float]:
    """Certified accuracy of the hand-made file at each radius, by hand."""
    return [sum(HAND[i][bound] >= r for i in CORRECT) / 6 for r in radii]


EXPECTED = {
    bound: {"acc": hand_curve(bound, RADII), "acr": sum(HAND[i][bound] for i in CORRECT) / 6}
    for bound in ("teng", "lecuyer", "teng_multiclass")
}


# --- synthetic files -----------------------------------------------------------------------


def synthetic_file(
    path: Path, noise: str, sigma: float, points: int = 40, seed: int = 0, training: str = "type1"
) -> Path:
    """A certify file in our format with random counts (for properties, not exact numbers):
    about one point in six abstains, one in five of the others is wrong."""
    rng = np.random.default_rng(seed)
    n, rows = 1000, []
    for idx in range(points):
        label = int(rng.integers(9))
        count = int(rng.integers(350, n + 1))
        share = -(-(n - count) // 9) - 1  # the runner-up has at least its share of the rest
        rows.append(
            {
                "idx": idx,
                "label": label,
                "count": count,
                "count_b": int(rng.integers(max(share, 0), n - count + 1)),
                "top_class": label if rng.random() < 0.8 else label + 1,
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


def _copy(source: Path, target: Path) -> Path:
    """A certify file and its sidecar, copied."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)
    shutil.copy(fmt.sidecar_path(source), fmt.sidecar_path(target))
    return target


def _edit_cells(path: Path, changes: dict[tuple[int, str], str]) -> None:
    """Set the cells {(idx, column): text} of a certify file and reseal its sidecar (the file
    stays a published pair: only the rows are wrong)."""
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    rows = [line.split("\t") for line in lines[1:]]
    for (idx, column), text in changes.items():
        row = next(r for r in rows if r[0] == str(idx))
        row[header.index(column)] = text
    path.write_text("".join("\t".join(r) + "\n" for r in [header, *rows]))
    fmt.write_sidecar(path, fmt.seal(path, fmt.read_sidecar(path), len(rows)))


def _report(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["report", *map(str, args)])
    return result.exit_code, result.stderr


def _one_error(stderr: str) -> str:
    """The error line, checked to be stderr's last and only error line, without a traceback."""
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("l1cert: error: ")]
    assert errors == lines[-1:] and "Traceback" not in stderr, stderr
    return errors[0]


# --- reading ------------------------------------------------------------------------------


def test_hand_made_file_is_read_with_its_identity(hand_made):
    run = read_run(hand_made)
    assert (run.dataset, run.noise, run.training, run.sigma) == ("digits", "laplace", "type1", 0.5)
    assert run.model == "laplace-type1-s0.5"
    assert (run.n0, run.n, run.alpha, run.sampling) == (100, 1000, 0.001, "fixed")
    assert run.bounds == ("teng", "lecuyer", "teng_multiclass")
    assert run.correct.tolist() == [True, True, False, False, True, True]
    assert run.predict.tolist() == [1, 2, -1, 5, 5, 6]
    assert not run.foreign and not run.partial and run.total_points == 6
    for bound, radius in run.bound_radii.items():
        assert radius.tolist() == pytest.approx([HAND[i][bound] for i in range(6)], rel=1e-9)


def test_identity_comes_from_the_sidecar_not_the_path(tmp_path, hand_made):
    target = _copy(hand_made, tmp_path / "cifar10" / "gaussian-type1-s0.25.tsv")
    side = fmt.read_sidecar(target)
    side["result"].update(training="type2", model_name="imported-resnet")
    fmt.write_sidecar(target, side)
    run = read_run(target)
    assert (run.dataset, run.noise, run.training, run.model, run.sigma) == (
        "digits",
        "laplace",
        "type2",
        "imported-resnet",
        0.5,
    )


def test_our_file_without_its_sidecar_is_refused(tmp_path, hand_made):
    target = tmp_path / "laplace-type1-s0.5.tsv"
    shutil.copy(hand_made, target)
    with pytest.raises(L1CertError, match="without its sidecar"):
        read_run(target)


def test_a_tsv_that_does_not_match_its_sidecar_is_refused(tmp_path, hand_made):
    target = _copy(hand_made, tmp_path / "laplace-type1-s0.5.tsv")
    lines = hand_made.read_text().splitlines(keepends=True)
    target.write_text("".join(lines[:-1]))  # a row fewer than the sidecar says
    with pytest.raises(L1CertError, match="does not match its sidecar"):
        read_run(target)


def test_cohen_six_column_file_is_gaussian_cohen_with_sigma_from_its_name():
    run = read_run(COHEN, CIFAR10)
    assert (run.dataset, run.noise, run.sigma, run.bounds) == (
        "cifar10",
        "gaussian",
        0.25,
        ("cohen",),
    )
    assert run.training == "unknown" and run.foreign and run.sampling is None
    # Correct points: radii 0.5 and 0.1 of four; the wrong one (0.3) must not count.
    assert certified_accuracy(run.bound_radii["cohen"], run.correct, [0, 0.2, 0.4]).tolist() == [
        0.5,
        0.25,
        0.25,
    ]


def test_cohen_file_takes_dataset_and_label_from_the_caller(tmp_path):
    target = tmp_path / "sigma_0.25"
    shutil.copy(COHEN, target)
    run = read_run(target, Naming(dataset="cifar10", label="cohen"))
    assert (run.dataset, run.training, run.noise, run.model) == (
        "cifar10",
        "cohen",
        "gaussian",
        "gaussian-cohen-s0.25",
    )
    assert read_run(target, Naming(dataset="cifar10", sigma=0.5)).sigma == 0.5  # the option wins
    # nothing in its name says its dataset: asked for, not "unknown" as it once was
    with pytest.raises(L1CertError, match="give it with --dataset"):
        read_run(target)


def _published(directory: Path) -> Path:
    """A published result directory (rs4a's layout) of four cifar10 points."""
    directory.mkdir(parents=True)
    np.save(directory / "labels.npy", np.array([3.0, 8.0, 0.0, 6.0]))  # rs4a saves floats
    np.save(directory / "predicted_labels.npy", np.array([3, 8, -1, 2]))
    np.save(directory / "radius_l1.npy", np.array([0.5, 0.1, 0.0, 0.3]))
    return directory


PARENTS = ("s4", "cifar10", "noise_9")  # folder names that would say a sigma or a dataset


def test_folders_above_a_foreign_input_say_nothing_of_its_identity(tmp_path):
    naming = Naming(dataset="cifar10", bound="dssn")
    found = set()
    for parent in PARENTS:
        cohen = tmp_path / parent / "sigma_0.25"
        cohen.parent.mkdir()
        shutil.copy(COHEN, cohen)
        published = _published(tmp_path / parent / "dssn_0.5")
        runs = [read_run(cohen, naming), read_run(published, naming)]
        found.add(tuple((run.dataset, run.sigma, run.model) for run in runs))
    assert found == {
        (("cifar10", 0.25, "gaussian-unknown-s0.25"), ("cifar10", 0.5, "dssn-unknown-s0.5"))
    }


def test_a_foreign_input_whose_name_says_nothing_asks_for_the_options(tmp_path):
    for parent in PARENTS:
        cohen, published = tmp_path / parent / "results.tsv", tmp_path / parent / "published"
        cohen.parent.mkdir()
        shutil.copy(COHEN, cohen)
        _published(published)
        for source, bound in ((cohen, []), (published, ["--bound", "dssn"])):
            out = ["--out-dir", tmp_path / "o", *bound]
            code, stderr = _report(source, *out)
            assert code == 2
            assert _one_error(stderr) == (
                f"l1cert: error: {source}: its name holds no noise level; give its sigma with "
                "--sigma"
            )
            code, stderr = _report(source, *out, "--sigma", "0.25")
            assert code == 2
            assert _one_error(stderr) == (
                f"l1cert: error: {source}: its name does not say its dataset; give it with "
                "--dataset"
            )
            named = read_run(source, Naming(dataset="cifar10", sigma=0.25, bound="dssn"))
            assert (named.dataset, named.sigma) == ("cifar10", 0.25)


def _strict_json(path: Path):
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_radii_near_the_float_maximum_give_valid_json(tmp_path):
    published = _published(tmp_path / "dssn_0.5")
    np.save(published / "radius_l1.npy", np.array([5e307, 5e307, 0.0, 5e307]))
    code, stderr = _report(published, "--out-dir", tmp_path / "o", "--dataset", "cifar10",
                           "--bound", "dssn")  # fmt: skip
    assert code == 0, stderr
    metrics = _strict_json(tmp_path / "o" / "metrics.json")
    (acr,) = [m["acr"] for m in metrics.values()]
    assert acr == pytest.approx(2 * 5e307 / 4)  # two correct of four, summed without overflow
    assert _strict_json(tmp_path / "o" / "summary-full.json")
    assert _strict_json(tmp_path / "o" / "summary" / "dssn.json")


def test_a_newline_in_a_foreign_name_keeps_each_markdown_row_on_one_line(tmp_path):
    cohen = tmp_path / "cifar10" / "gaussian-line\nbreak|x-s0.25.tsv"
    cohen.parent.mkdir()
    shutil.copy(COHEN, cohen)
    code, stderr = _report(cohen, "--out-dir", tmp_path / "o", "--dataset", "cifar10")
    if code == 2:  # refused as no plain name: then in one line that names it
        assert "not a plain name" in _one_error(stderr), stderr
        return
    assert code == 0, stderr
    text = to_markdown(["model", "r=0"], [["gaussian\nline|break", "50.0"]])
    assert text.splitlines()[2] == "| gaussian line\\|break | 50.0 |"
    for table in ("certified-accuracy", "envelope"):
        lines = (tmp_path / "o" / "tables" / f"{table}.md").read_text().splitlines()
        assert all(line.startswith("| ") and line.endswith(" |") for line in lines), lines
        assert len(lines) == 3  # header, alignment, the one curve


# --- tables, metrics, envelope ------------------------------------------------------------


def test_table_numbers_match_hand_computation(hand_made):
    rows = accuracy_rows([read_run(hand_made)], RADII)
    assert [r.bound for r in rows] == ["teng", "lecuyer", "teng_multiclass"]
    for row in rows:
        assert row.clean_accuracy == pytest.approx(4 / 6)
        assert row.abstention_rate == pytest.approx(1 / 6)
        assert row.acr == pytest.approx(EXPECTED[row.bound]["acr"], rel=1e-9)
        assert row.accuracy == pytest.approx(EXPECTED[row.bound]["acc"])


@pytest.fixture(scope="module")
def built(tmp_path_factory, hand_made):
    """One report over the hand-made file, Cohen et al.'s file and a synthetic grid."""
    root = tmp_path_factory.mktemp("report")
    files = [hand_made, COHEN, *synthetic_grid(root / "certify", dataset="synth")]
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
            "--dataset",
            "cifar10",
        ],
    )
    assert result.exit_code == 0, result.output
    return out, metrics, result.stderr


def test_report_files_hold_the_hand_computed_numbers(built, hand_made):
    out, metrics_path, log = built
    assert f"wrote {metrics_path}" in log

    with open(out / "tables" / "certified-accuracy.csv") as f:
        table = {row["bound"]: row for row in csv.DictReader(f) if row["dataset"] == "digits"}
    for bound, expected in EXPECTED.items():
        row = table[bound]
        assert (row["points"], row["total_points"]) == ("6", "6")
        assert float(row["clean_accuracy"]) == pytest.approx(4 / 6, rel=1e-5)
        assert float(row["abstention_rate"]) == pytest.approx(1 / 6, rel=1e-5)
        assert float(row["acr"]) == pytest.approx(expected["acr"], rel=1e-5)
        got = [float(row[f"r={r:g}"]) for r in RADII]
        assert got == pytest.approx(expected["acc"], rel=1e-5)

    metrics = json.loads(metrics_path.read_text())
    teng = metrics["digits/laplace-type1-s0.5/teng"]
    assert teng["points"] == 6
    assert teng["certified_accuracy"]["0.5"] == pytest.approx(EXPECTED["teng"]["acc"][2], abs=1e-6)
    assert teng["acr"] == pytest.approx(EXPECTED["teng"]["acr"], abs=1e-6)
    assert metrics["cifar10/gaussian-unknown-s0.25/cohen"]["certified_accuracy"]["0.25"] == 0.25

    markdown = (out / "tables" / "certified-accuracy.md").read_text().splitlines()
    assert markdown[0].startswith("| dataset |")
    hand = [line for line in markdown if line.startswith("| digits | laplace-type1-s0.5 |")]
    teng = EXPECTED["teng"]
    shown = " | ".join(f"{100 * a:.1f}" for a in teng["acc"])
    assert f"| teng | 6 | 6 | 66.7 | 16.7 | {teng['acr']:.3f} | {shown} |" in hand[0]
    # its cost: n0 + n = 1 100 forward passes per point, 0.5 s each, training not recorded
    assert hand[0].endswith("| 1,100 | 6,600 | 3 | - |")
    latex = (out / "tables" / "certified-accuracy.tex").read_text()  # the paper's: see below
    thm1 = " & ".join(f"{100 * a:.1f}" for a in EXPECTED["teng_multiclass"]["acc"])
    assert rf"& Thm 1 & 0.5 & 66.7 & {EXPECTED['teng_multiclass']['acr']:.3f} & {thm1} \\" in latex

    envelope = list(csv.DictReader(open(out / "tables" / "envelope.csv")))
    digits = [r for r in envelope if r["dataset"] == "digits" and r["bound"] == "teng"]
    assert [float(r["certified_accuracy"]) for r in digits] == pytest.approx(
        EXPECTED["teng"]["acc"], rel=1e-5
    )
    assert {r["sigma"] for r in digits} == {"0.5"}


def test_foreign_files_are_said_to_be_read_as_given(built, hand_made):
    out, _, log = built
    assert (
        f"l1cert report: read {hand_made}: digits laplace-type1-s0.5: 6 points, bounds teng, "
        "lecuyer, teng_multiclass (re-derived)"
    ) in log.splitlines()
    assert (
        f"l1cert report: read {COHEN}: cifar10 gaussian-unknown-s0.25: 4 points, bounds cohen "
        "(foreign: read as given, not re-derived)"
    ) in log.splitlines()
    given = "read as given: their radii are their authors' code's and were not re-derived"
    cifar10 = (out / "captions" / "cifar10-certified-accuracy.rst").read_text()
    assert given in cifar10 and "n = " not in cifar10  # it has no n, n0 or alpha to state
    assert given in (out / "captions" / "certified-accuracy.rst").read_text()
    assert given in (out / "tables" / "certified-accuracy.tex").read_text()
    assert given not in (out / "captions" / "digits-certified-accuracy.rst").read_text()


def test_expected_outputs_is_exactly_what_is_written(built):
    out, metrics, _ = built
    lock = out / ".report.lock"  # stays, as every lock file of l1cert does; not an output
    manifest = out / ".report-outputs.json"  # what the next report into `out` may replace
    written = {p for p in out.rglob("*") if p.is_file() and p not in (lock, manifest)}
    expected = set(expected_outputs(out, ["digits", "cifar10", "synth"], metrics))
    assert written | {metrics} == expected
    listed = sorted(p.relative_to(out).as_posix() for p in written)
    assert json.loads(manifest.read_text()) == listed
    assert lock.is_file() and lock.read_text() == ""  # released


# --- the LaTeX tables: what a paper takes as it is ------------------------------------------

RAW_IDS = re.compile(
    r"\b(type1|type2|teng|teng\\_multiclass|lecuyer|cohen|uniform|uniform\\_box|ssn|ssn\\_box"
    r"|dssn|laplace|gaussian)\b"
)


def _tabular(latex: str) -> str:
    """What a LaTeX table's tabular holds, the caption left out."""
    return latex[latex.index(r"\begin{tabular}") : latex.index(r"\end{tabular}")]


def test_latex_tables_are_booktabs_with_display_names_caption_and_label(built):
    out, _, _ = built
    for name in ("certified-accuracy", "envelope", "cost"):
        latex = (out / "tables" / f"{name}.tex").read_text()
        table = _tabular(latex)
        spec = re.search(r"\\begin\{tabular\}\{([^}]*)\}", latex).group(1)
        assert set(spec) <= {"l", "r"}, spec  # no vertical rules
        assert table.count(r"\toprule") == table.count(r"\bottomrule") == 1
        assert r"\midrule" in table and r"\hline" not in table and "|" not in table
        assert rf"\label{{tab:{name}}}" in latex and r"\caption{" in latex
        assert not RAW_IDS.search(table), RAW_IDS.search(table)
        # escaped: no bare special character in a cell (σ, ℓ1 and % set for LaTeX)
        assert not re.search(r"(?<!\\)[_%&#$]", table.replace(" & ", " ").replace("$\\sigma$", "")
                             .replace("$\\ell_1$", "")), name  # fmt: skip
        assert "σ" not in latex and "ℓ" not in latex and "α" not in latex
    accuracy = _tabular((out / "tables" / "certified-accuracy.tex").read_text())
    # three datasets: each training type's rows under a title naming its dataset
    assert r"\multicolumn{9}{l}{\textit{digits, Type 1}}" in accuracy
    assert r"\multicolumn{9}{l}{\textit{synth, Type 2}}" in accuracy
    for shown in ("Laplace & Thm 2 &", "& Lecuyer et al. (DP) &", "& Thm 1 &",
                  "Gaussian & Cohen et al. &", "Uniform & Yang et al. &",
                  r"& box (Vor\'{a}\v{c}ek \& Hein) &"):  # fmt: skip
        assert shown in accuracy, shown
    assert "Clean & ACR & 0 & 0.25 & 0.5 & 1" in accuracy
    # accuracy only: the cost is its own table
    assert "1,100" not in accuracy and "passes" not in accuracy and "seconds" not in accuracy
    cost = _tabular((out / "tables" / "cost.tex").read_text())
    assert r"\multicolumn{2}{c}{forward passes} & \multicolumn{2}{c}{seconds}" in cost
    assert "Laplace & 0.5 & 1,100 & 6,600 & 3 & -- \\\\" in cost  # training not recorded
    envelope = _tabular((out / "tables" / "envelope.tex").read_text())
    teng = " & ".join(f"{100 * a:.1f}" for a in EXPECTED["teng"]["acc"])
    assert f"Laplace & Thm 2 & {teng} \\\\" in envelope  # its σ on the line below
    assert "(0.5)" in envelope


def test_the_cost_table_has_a_row_per_model(built):
    out, _, _ = built
    with open(out / "tables" / "cost.csv") as f:
        rows = list(csv.DictReader(f))
    hand = [r for r in rows if (r["dataset"], r["model"]) == ("digits", "laplace-type1-s0.5")]
    assert len(hand) == 1 and len(rows) == len({(r["dataset"], r["model"]) for r in rows})
    assert hand[0]["passes_mean"] == "1100" and hand[0]["train_seconds"] == ""
    assert (
        "| digits | laplace-type1-s0.5 | laplace | type1 | 0.5 | 6 | 1,100 |"
        in (out / "tables" / "cost.md").read_text()
    )


def test_latex_escape():
    assert latex_escape("Voráček & Hein: 50% of a_b at ℓ1 σ ≥ 1") == (
        r"Vor\'{a}\v{c}ek \& Hein: 50\% of a\_b at $\ell_1$ $\sigma$ $\geq$ 1"
    )


# --- the DVC metric ---------------------------------------------------------------------------

DEFAULT_NOISES, DEFAULT_TRAININGS = ("laplace", "gaussian", "uniform", "dssn"), ("type1", "type2")


def test_the_headline_holds_the_envelope_s_best_acr_accuracy_and_passes(hand_made):
    found = headline([read_run(hand_made)], 0.5)
    assert set(found) == set(EXPECTED)
    for bound, expected in EXPECTED.items():
        assert found[bound] == {  # one model: its own numbers; n0 + n passes per point
            "type1": {
                "acr": round(expected["acr"], 3),
                "acc@0.5": round(expected["acc"][2], 3),
                "passes": 1100,
            }  # fmt: skip
        }


def test_the_dvc_metric_of_the_default_experiment_is_a_table_under_250_columns(tmp_path):
    """`dvc metrics show` on the headline of an experiment of the default's shape (four
    noises, Type 1 and Type 2, four σ): a row per bound, a column per training and number."""
    files = write_grid(tmp_path / "certify", DEFAULT_NOISES, DEFAULT_TRAININGS,
                       (0.12, 0.25, 0.5, 1.0))  # fmt: skip
    found = headline(read_runs(files, quiet=True), 0.5)
    bounds = [b for noise in DEFAULT_NOISES for b in NOISES[noise].bounds]
    assert sorted(found) == sorted(bounds)
    for rows in found.values():
        assert set(rows) == set(DEFAULT_TRAININGS)
        assert all(set(row) == {"acr", "acc@0.5", "passes"} for row in rows.values())
    repo = tmp_path / "repo"
    (repo / "results" / "summary").mkdir(parents=True)
    for bound in all_bounds():  # as the report writes it
        (repo / "results" / "summary" / f"{bound}.json").write_text(
            json.dumps(found.get(bound, {}))
        )
    listed = "".join(f"- results/summary/{b}.json\n" for b in all_bounds())
    (repo / "dvc.yaml").write_text(f"metrics:\n{listed}")  # as dvc.yaml lists them
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=repo, env=env, check=True)
    shown = subprocess.run([*dvc, "metrics", "show"], cwd=repo, env=env, check=True,
                           capture_output=True, text=True).stdout.splitlines()  # fmt: skip
    assert len(shown) == 1 + len(all_bounds())  # the header, a row per bound
    assert shown[0].split()[1:] == [f"{t}.{k}" for t in DEFAULT_TRAININGS
                                    for k in ("acc@0.5", "acr", "passes")]  # fmt: skip
    assert max(map(len, shown)) <= 250, "\n".join(shown)


def test_plot_csv_matches_the_curves(built):
    out, _, _ = built
    with open(out / "plots" / "digits-teng.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["radius", "laplace-type1-s0_5"]
    grid = [float(r["radius"]) for r in rows]
    curve = [float(r["laplace-type1-s0_5"]) for r in rows]
    assert grid[0] == 0 and grid[-1] > max(HAND[5].values())  # past every radius
    assert curve == pytest.approx(hand_curve("teng", grid), rel=1e-5)
    assert curve[0] == pytest.approx(4 / 6) and curve[-1] == 0
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
    assert "n = 1000, n0 = 100, α = 0.001, fixed sampling" in caption
    assert "sigma = 0.5" in (out / "captions" / "radius-vs-pa.rst").read_text()


def test_curves_are_non_increasing_and_envelope_dominates(tmp_path):
    """Each bound's curve counts the points it certifies with the right class (`hits`: for
    Theorem 1 also where the primary bound abstains)."""
    runs = read_runs(synthetic_grid(tmp_path), quiet=True)
    grid = radius_axis(runs)
    assert grid[0] == 0 and np.all(np.diff(grid) > 0)
    for run in runs:
        assert 0 < run.correct.sum() < run.points and (run.predict == -1).any()
        for bound, radius in run.bound_radii.items():
            curve = certified_accuracy(radius, run.hits[bound], grid)
            assert np.all(np.diff(curve) <= 0)
            assert curve[-1] == 0  # the grid reaches past every radius
    envs = envelopes(runs, grid)
    # training types × bounds of laplace, gaussian and uniform
    assert len(envs) == 2 * len(
        [b for n in ("laplace", "gaussian", "uniform") for b in NOISES[n].bounds]
    )
    for env in envs:
        assert [m.sigma for m in env.members] == [0.25, 0.5, 1.0]
        for member in env.members:
            curve = certified_accuracy(member.bound_radii[env.bound], member.hits[env.bound], grid)
            assert np.all(env.accuracy >= curve)
        achieved = [
            certified_accuracy(b.bound_radii[env.bound], b.hits[env.bound], [r])[0] if b else 0.0
            for b, r in zip(env.best, grid, strict=True)
        ]
        assert env.accuracy == pytest.approx(achieved)


# --- partial results ------------------------------------------------------------------------


def test_a_shard_is_refused_unless_partial_results_are_asked_for(tmp_path):
    shard = write_hand_made(tmp_path, points=range(3), shard=1, shards=2, total_points=6,
                            dataset_size=6)  # fmt: skip
    code, stderr = _report(shard, "--out-dir", tmp_path / "o")
    assert code == 2 and not (tmp_path / "o" / "metrics.json").exists()
    assert _one_error(stderr) == (
        f"l1cert: error: {shard} is shard 1 of 2 (3 of 6 points): merge the shards first, or "
        "pass --partial to report it as partial results"
    )

    code, stderr = _report(shard, "--out-dir", tmp_path / "o", "--partial")
    assert code == 0, stderr
    assert f"read {shard}: digits laplace-type1-s0.5: 3 of 6 points," in stderr
    said = "partial results: laplace-type1-s0.5 holds 3 of 6 points"
    captions = sorted((tmp_path / "o" / "captions").glob("*.rst"))
    data = [c for c in captions if c.stem not in ("bound-comparison", "radius-vs-pa")]
    assert len(data) == 7 and all(said in c.read_text() for c in data)
    tables = tmp_path / "o" / "tables"
    for table in ("certified-accuracy", "envelope", "cost"):
        assert said in (tables / f"{table}.tex").read_text()
    with open(tables / "certified-accuracy.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["points"], r["total_points"]) for r in rows} == {("3", "6")}
    assert "| 3 | 6 |" in (tables / "certified-accuracy.md").read_text()
    teng = next(r for r in rows if r["bound"] == "teng")  # of the three points it holds
    assert float(teng["clean_accuracy"]) == pytest.approx(2 / 3, rel=1e-5)


def test_a_merged_file_missing_points_is_refused_unless_partial(tmp_path, hand_made):
    target = _copy(hand_made, tmp_path / "digits" / "laplace-type1-s0.5.tsv")
    lines = target.read_text().splitlines(keepends=True)
    target.write_text("".join(line for line in lines if line.split("\t")[0] not in ("2", "4")))
    fmt.write_sidecar(target, fmt.seal(target, fmt.read_sidecar(target), 4))
    code, stderr = _report(target, "--out-dir", tmp_path / "o")
    assert code == 2
    assert _one_error(stderr) == (
        f"l1cert: error: {target} holds 4 of the 6 points its settings name (first missing "
        "idx 2): certify them, or pass --partial to report it as partial results"
    )
    run = read_run(target, partial=True)
    assert (run.points, run.total_points, run.partial) == (4, 6, True)


# --- bad input ----------------------------------------------------------------------------


def _edit(text: str, case: str) -> str:
    lines = text.splitlines(keepends=True)
    header = lines[0].rstrip("\n").split("\t")

    def cell(line: str, column: str, value: str) -> str:
        fields = line.rstrip("\n").split("\t")
        fields[header.index(column)] = value
        return "\t".join(fields) + "\n"

    if case == "empty":
        return ""
    if case == "header only":
        return lines[0]
    if case == "short row":
        return "".join(lines[:3]) + "\t".join(lines[3].split("\t")[:7]) + "\n" + "".join(lines[4:])
    if case == "torn last line":
        return text[:-5]
    if case == "mixed sigma":
        return "".join(lines[:-1]) + cell(lines[-1], "sigma", "0.25")
    if case == "mixed n":
        return "".join(lines[:-2]) + cell(lines[-2], "n", "2000") + lines[-1]
    if case == "missing column":
        drop = header.index("radius_lecuyer")
        return "".join(
            "\t".join(f for i, f in enumerate(line.rstrip("\n").split("\t")) if i != drop) + "\n"
            for line in lines
        )
    if case == "not a number":
        return "".join(lines[:-1]) + cell(lines[-1], "radius_teng", "x")
    raise AssertionError(case)


# Rows whose settings disagree with the run's are refused by re-derivation, naming idx and
# column (they were "mixed settings" before rows were re-derived).
BAD_CASES = {
    "empty": "empty",
    "header only": "no certified points",
    "short row": ":4: malformed row (7 fields",
    "torn last line": "truncated",
    "mixed sigma": "idx 5: sigma '0.25' is not what its counts and settings give (expected 0.5)",
    "mixed n": "idx 4: n '2000' is not one of the run's numbers of draws [1000]",
    "missing column": "no column radius_lecuyer",
    "not a number": "radius_teng 'x' is not a radius",
}


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_file_gives_one_line_naming_file_and_problem(tmp_path, hand_made, case):
    bad = _copy(hand_made, tmp_path / "digits" / "laplace-type1-s0.5.tsv")
    bad.write_text(_edit(hand_made.read_text(), case))
    if bad.read_text().endswith("\n") and bad.read_text().count("\n") > 1:
        side = fmt.read_sidecar(bad)  # the rows are the test
        fmt.write_sidecar(bad, fmt.seal(bad, side, bad.read_text().count("\n") - 1))
    code, stderr = _report(bad, "--out-dir", tmp_path / "o")
    assert code == 2
    error = _one_error(stderr)  # progress lines, then the error
    assert str(bad) in error and BAD_CASES[case] in error
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_sidecar_disagreeing_with_rows_is_refused_naming_the_column(tmp_path, hand_made):
    target = _copy(hand_made, tmp_path / "digits" / "laplace-type1-s0.5.tsv")
    side = fmt.read_sidecar(target)
    side["result"]["sigma"] = 0.25
    fmt.write_sidecar(target, side)
    code, stderr = _report(target, "--out-dir", tmp_path / "o")
    assert code == 2
    assert f"{target}: idx 0: sigma '0.5' is not what its counts and settings give" in stderr


def test_same_model_twice_is_refused(tmp_path, hand_made):
    copy = _copy(hand_made, tmp_path / "x" / "digits" / "laplace-type1-s0.5.tsv")
    code, stderr = _report(hand_made, copy, "--out-dir", tmp_path / "o")
    assert code == 2 and "same dataset and model" in stderr


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


def test_bad_radii_option(tmp_path, hand_made):
    code, stderr = _report(hand_made, "--out-dir", tmp_path, "--radii", "0,abc")
    assert code == 2 and "--radii" in stderr


def test_a_report_killed_before_leaves_no_staging_behind(tmp_path, hand_made):
    out = tmp_path / "o"
    stale = out / ".report-staging-killed"
    (stale / "tables").mkdir(parents=True)  # what a SIGKILL mid-report leaves
    code, stderr = _report(hand_made, "--out-dir", out)
    assert code == 0, stderr
    assert not stale.exists() and not list(out.glob(".report-staging-*"))
    assert (out / "tables" / "certified-accuracy.csv").read_text().startswith("dataset,")


def test_a_fixed_and_a_sequential_run_of_one_model_are_not_mixed(tmp_path):
    fixed = synthetic_file(tmp_path / "a" / "digits" / "laplace-type1-s0.5.tsv", "laplace", 0.5)
    sequential = tmp_path / "b" / "digits" / "laplace-type1-s0.5.tsv"
    rows = [{"idx": 0, "label": 3, "count": 390, "count_b": 5, "top_class": 3, "n": 400}]
    write_certify_file(sequential, "laplace", 0.5, rows, sampling="sequential", radii=[0, 0.25])
    assert read_run(sequential).sampling == "sequential"
    with pytest.raises(L1CertError, match="a sequential and a fixed run .* report them separately"):
        read_runs([fixed, sequential])


# --- re-derivation (the report's side; resume's and merge's: test_rederive.py) ----------------


def test_a_sidecar_without_its_code_digest_is_refused(tmp_path, hand_made):
    target = _copy(hand_made, tmp_path / "digits" / "laplace-type1-s0.5.tsv")
    side = fmt.read_sidecar(target)
    del side["result"]["code"]
    fmt.write_sidecar(target, side)
    code, stderr = _report(target, "--out-dir", tmp_path / "o")
    assert code == 2
    assert _one_error(stderr) == (
        f"l1cert: error: {fmt.sidecar_path(target)} records no code digest: its rows cannot be "
        "re-derived by this code; certify afresh"
    )


def test_radii_that_are_not_their_counts_are_refused_however_sealed(tmp_path, hand_made):
    target = _copy(hand_made, tmp_path / "digits" / "laplace-type1-s0.5.tsv")
    columns = ["radius", *(f"radius_{b}" for b in EXPECTED)]
    table = fmt.read_rows(target)
    tripled = {
        (idx, column): f"{3 * float(fields[table.header.index(column)]):.10g}"
        for idx, fields in table.rows.items() for column in columns
    }  # fmt: skip
    _edit_cells(target, tripled)
    code, stderr = _report(target, "--out-dir", tmp_path / "o")
    assert code == 2
    teng = tripled[0, "radius_teng"]
    assert float(teng) == pytest.approx(3 * HAND[0]["teng"])
    assert _one_error(stderr).startswith(
        f"l1cert: error: {target}: idx 0: radius_teng '{teng}' is not what its counts and "
        f"settings give (expected {HAND[0]['teng']:.10g})"
    )


@pytest.fixture
def dssn_file(tmp_path) -> Path:
    """A DSSN-style file (exact: L = 13 copies of digits at sigma 0.25), consistent rows."""
    rows = [
        {"idx": 0, "label": 1, "count": 10, "count_b": 2, "top_class": 1, "runner_up": 0},
        {"idx": 1, "label": 2, "count": 7, "count_b": 5, "top_class": 2, "runner_up": 3},
        {"idx": 2, "label": 4, "count": 5, "count_b": 4, "top_class": 3, "runner_up": 4},
    ]
    path = write_certify_file(tmp_path / "digits" / "dssn-type1-s0.25.tsv", "dssn", 0.25, rows)
    run = read_run(path)  # as written: accepted, its radii DSSN's by hand
    assert fmt.read_sidecar(path)["result"]["copies"] == 13
    assert run.bound_radii["dssn"].tolist() == [3 / 16, 1 / 16, 0 / 16]
    assert run.correct.tolist() == [True, True, False] and run.sampling == "exact"
    return path


@pytest.mark.parametrize(
    "cell, text, why",
    [
        ((0, "runner_up"), "99", "is not a class other than top_class"),
        ((0, "runner_up"), "-5", "is not a class other than top_class"),
        ((0, "runner_up"), "1", "is not a class other than top_class"),  # its top_class
        ((2, "count_b"), "6", "exceeds count (the prediction is the argmax)"),
        ((0, "count_b"), "4", "exceeds n - count"),  # 10 + 4 votes of 13 copies
    ],
)
def test_a_dssn_row_that_is_not_its_votes_is_refused(dssn_file, cell, text, why):
    _edit_cells(dssn_file, {cell: text})
    with pytest.raises(L1CertError) as err:
        read_run(dssn_file)
    idx, column = cell
    assert str(err.value).startswith(f"{dssn_file}: idx {idx}: {column} '{text}' {why}")


def test_a_long_latex_table_is_cut_into_floats_at_its_groups():
    """58 rows (the default experiment's per-model table) do not fit a page: one float per
    training type, the first captioned and labelled, the next continuing it, no row lost."""
    from l1cert.table_formats import FLOAT_ROWS, to_latex

    rows = [[f"model {i}", f"{i}.0"] for i in range(58)]
    latex = to_latex(["Model", "ACR"], rows, "Certified accuracy.", "tab:acc",
                     groups={0: "Type 1", 29: "Type 2"})  # fmt: skip
    floats = latex.split(r"\end{table}")[:-1]
    assert len(floats) == 2 and 29 <= FLOAT_ROWS < 58
    assert r"\caption{Certified accuracy.}" in floats[0] and r"\label{tab:acc}" in floats[0]
    assert r"\caption{Table~\ref{tab:acc}, continued.}" in floats[1]
    assert r"\label{tab:acc:2}" in floats[1]
    for part, title in zip(floats, ("Type 1", "Type 2"), strict=True):
        assert part.count(r"\toprule") == part.count(r"\bottomrule") == 1
        assert rf"\textit{{{title}}}" in part and r"\addlinespace" not in part
    shown = re.findall(r"^model (\d+) & ", latex, re.M)
    assert [int(i) for i in shown] == list(range(58))
    short = to_latex(["Model", "ACR"], rows[:12], "c", "tab:s", groups={0: "A", 6: "B"})
    assert short.count(r"\begin{table}") == 1 and short.count(r"\addlinespace") == 1
    full = to_latex(["Model", "ACR"], rows[:FLOAT_ROWS], "c", "tab:f", groups={0: "A", 20: "B"})
    assert full.count(r"\begin{table}") == 1  # exactly a float's rows: one float
    packed = to_latex(["Model", "ACR"], rows, "c", "tab:p", groups={0: "A", 10: "B", 20: "C"})
    assert [p.count("model ") for p in packed.split(r"\end{table}")[:-1]] == [20, 38]
    alone = to_latex(["Model", "ACR"], rows, "c", "tab:a", groups={0: "A", 50: "B"})
    assert [p.count("model ") for p in alone.split(r"\end{table}")[:-1]] == [50, 8]
