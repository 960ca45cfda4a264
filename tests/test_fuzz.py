"""Bad input on every subcommand: one line on stderr, exit code 2, and nothing touched.

One table, one test. Each case builds its files in a fresh directory (the working directory
of the call), runs the real CLI on them and checks that the CLI

- exits with code 2 and prints exactly one line, `l1cert: error: ...`, naming the problem
  (the case's fragment), with no traceback;
- leaves every file that was there byte for byte as it was, and makes no new file or
  directory (unless the case lists it).

Click's own usage errors (`--n 1e308` for an int option, `--sigma abc`) are one such line too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from l1cert import certify_format as fmt
from l1cert import data, models
from l1cert.cli import main

torch.set_num_threads(1)

SRC = Path(__file__).resolve().parents[1] / "src"

# A tiny certification: 3 points, 10 + 50 draws each.
CERTIFY = ["certify", "--model", "model.pt", "--n0", "10", "--n", "50", "--max", "3",
           "--batch", "50", "--seed", "1"]  # fmt: skip
SHARDS = ["shard-1-of-2.tsv", "shard-2-of-2.tsv"]
MERGE = ["merge", *SHARDS, "--out", "merged.tsv"]
REPORT = ["report", "run.tsv", "--out-dir", "rep", "--radii", "0,0.25"]
TRAIN = ["train", "--dataset", "digits", "--arch", "digits_mlp", "--noise", "laplace",
         "--sigma", "0.25", "--epochs", "1", "--out", "tmp/run"]  # fmt: skip
DIGITS_META = None  # filled by the `assets` fixture
MORE_THAN_CPUS = (os.cpu_count() or 1) + 1


# --- the files a case starts from -----------------------------------------------------------


def digits_model(**meta_changes):
    """An untrained digits MLP in the real checkpoint format, its meta changed as given."""
    info = data.dataset_info("digits")
    torch.manual_seed(0)
    meta = dict(
        arch="digits_mlp", dataset="digits", num_classes=10, input_shape=info.input_shape,
        mean=info.mean, std=info.std, noise="laplace", sigma=0.25, training="type1",
        type2=None, epochs=0, seed=0,
    )  # fmt: skip
    meta.update(meta_changes)
    model = models.build_model("digits_mlp", 10, meta["input_shape"], info.mean, info.std)
    return model, meta


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """model.pt, a finished 3-point run (run.tsv) and the same run in two shards, all made
    by `l1cert certify`."""
    folder = tmp_path_factory.mktemp("assets")
    model, meta = digits_model()
    models.save_model(folder / "model.pt", model, meta)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        for extra in (["--out", "run.tsv"],
                      ["--shard", "1/2", "--out", SHARDS[0]],
                      ["--shard", "2/2", "--out", SHARDS[1]]):  # fmt: skip
            result = CliRunner().invoke(main, [*CERTIFY, *extra])
            assert result.exit_code == 0, result.output
    finally:
        os.chdir(cwd)
    shutil.rmtree(folder / "partial")  # lock files of the finished runs
    return folder


def copy(*names):
    """Copy these asset files (and each TSV's sidecar) into the case's directory."""

    def step(tmp: Path, assets: Path):
        for name in names:
            shutil.copy(assets / name, tmp / name)
            if name.endswith(".tsv"):
                shutil.copy(fmt.sidecar_path(assets / name), fmt.sidecar_path(tmp / name))

    return step


def write(name: str, content: str | bytes):
    def step(tmp: Path, assets: Path):
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)

    return step


def mkdir(name: str):
    return lambda tmp, assets: (tmp / name).mkdir(parents=True)


def model_with(**meta_changes):
    """model.pt whose meta differs as given (a value None drops the key)."""

    def step(tmp: Path, assets: Path):
        model, meta = digits_model(**meta_changes)
        models.save_model(tmp / "model.pt", model, {k: v for k, v in meta.items() if v is not None})

    return step


def model_without_meta(tmp: Path, assets: Path):
    model, _ = digits_model()
    torch.save({"format": models.FORMAT, "state_dict": model.state_dict()}, tmp / "model.pt")


def _section(key: str) -> str:
    """The sidecar section that holds `key` (`certify_format.SIDECAR_CHECKS`; else result)."""
    return next((name for name, keys in fmt.SIDECAR_CHECKS.items() if key in keys), "result")


def _edit_sidecar(name: str, edit):
    def step(tmp: Path, assets: Path):
        side = fmt.sidecar_path(tmp / name)
        doc = json.loads(side.read_text())
        edit(doc)
        side.write_text(json.dumps(doc, indent=2) + "\n")

    return step


def _holder(doc: dict, key: str) -> dict:
    return doc[_section(key)] if _section(key) else doc


def sidecar_without(name: str, key: str):
    """The sidecar of a copied certify file without `key` (in its section)."""
    return _edit_sidecar(name, lambda doc: _holder(doc, key).pop(key))


def sidecar_with(name: str, **changes):
    """The sidecar of a copied certify file with these keys set, each in its section (its TSV
    and seal unchanged)."""

    def edit(doc):
        for key, value in changes.items():
            _holder(doc, key)[key] = value

    return _edit_sidecar(name, edit)


def copy_as(name: str, target: str):
    """A copied certify file under another name, its sidecar beside it."""

    def step(tmp: Path, assets: Path):
        path = tmp / target
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(assets / name, path)
        shutil.copy(fmt.sidecar_path(assets / name), fmt.sidecar_path(path))

    return step


def link(name: str, target: str, hard: bool = False):
    """`name` as a symbolic (or hard) link to `target`."""

    def step(tmp: Path, assets: Path):
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if hard:
            os.link(tmp / target, path)
        else:
            os.symlink(target, path)

    return step


def edit_row(name: str, **changes):
    """Change the first row of a copied certify file, then re-seal its sidecar (row count and
    digest), so that the row check, not the seal, is what refuses it. A value may be a
    function of the row ({column: text})."""

    def step(tmp: Path, assets: Path):
        path = tmp / name
        lines = path.read_text().splitlines(keepends=True)
        header = lines[0].rstrip("\n").split("\t")
        row = dict(zip(header, lines[1].rstrip("\n").split("\t"), strict=True))
        for column, value in changes.items():
            row[column] = str(value(row) if callable(value) else value)
        lines[1] = "\t".join(row[c] for c in header) + "\n"
        path.write_text("".join(lines))
        settings = fmt.read_sidecar(path)
        fmt.write_sidecar(path, fmt.seal(path, settings, len(lines) - 1))

    return step


def png(name: str):
    def step(tmp: Path, assets: Path):
        from PIL import Image

        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), (200, 30, 30)).save(path)

    return step


def png16(name: str, rgb: bool = False):
    """A 16-bit PNG (grey, or 48-bit RGB written by hand: Pillow cannot write those)."""

    def step(tmp: Path, assets: Path):
        import struct
        import zlib

        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = b"".join(b"\x00" + b"\xea\x60" * (3 if rgb else 1) * 4 for _ in range(4))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(
                ">I", zlib.crc32(kind + data))  # fmt: skip

        header = struct.pack(">IIBBBBB", 4, 4, 16, 2 if rgb else 0, 0, 0, 0)
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                         + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b""))  # fmt: skip

    return step


def noise_state(**tensors):
    """model.pt whose checkpoint keeps this noise state."""

    def step(tmp: Path, assets: Path):
        model, meta = digits_model()
        models.save_model(tmp / "model.pt", model, meta, tensors)

    return step


def wrong_label(row):
    """A class other than the row's label: with correct=1 the row contradicts itself."""
    return (int(row["label"]) + 1) % 10


GARBAGE = b"\x89PNG\r\n\x1a\n not really an image \xff\xfe\x00"
# Bytes given as a checkpoint, each tripping torch's unpickler in its own way (text: KeyError
# on the opcode 'h'; b"e": IndexError; b"J": struct.error; b"c\x80q": UnicodeDecodeError).
NOT_CHECKPOINTS = {
    "text": b"hello, this is a text file\n",
    "random": bytes((i * 197 + 89) % 256 for i in range(512)),
    "index-error": b"e",
    "struct-error": b"J",
    "unicode-error": b"c\x80q",
}
IMPORT = ["import", "ck.pth", "--format", "cohen", "--dataset", "cifar10", "--noise", "laplace",
          "--sigma", "0.25", "--out", "m.pt"]  # fmt: skip
COHEN_SIX = (
    "idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t3\t3\t0.5\t1\t0.1\n1\t2\t-1\t0\t0\t0.1\n"
)
# Sidecar keys of a shard set to what readers cannot use, and the fragment of the refusal.
BAD_SIDECAR = {
    "code-null": ({"code": None}, "records no code digest"),
    "code-text": ({"code": "abc"}, "code 'abc' is not {version, sha256} strings"),
    "code-version-int": ({"code": {"version": 1, "sha256": "0"}}, "is not {version, sha256}"),
    "dataset-size-huge": ({"dataset_size": 10**13}, "dataset_size 10000000000000 is not between"),
    "dataset-size-float": (
        {"dataset_size": 1e13},
        "dataset_size 10000000000000.0 is not an integer",
    ),
    "skip-zero": ({"skip": 0}, "skip 0 is not between 1 and"),
    "shards-text": ({"shards": "2"}, "shards '2' is not an integer"),
    "shard-above-shards": ({"shard": 3}, "shard 3 of 2 shards"),
    "num-classes-huge": ({"num_classes": 10**6}, "num_classes 1000000 is not between"),
    "max-below": ({"max": -5}, "max -5 is not between -1 and"),
    "n0-bool": ({"n0": True}, "n0 True is not an integer"),
    "n-negative": ({"n": -50}, "n -50 is not between 1 and"),
    "batch-list": ({"batch": [50]}, "batch [50] is not an integer"),
    "sigma-text": ({"sigma": "abc"}, "sigma 'abc' is not a number"),
    "alpha-2": ({"alpha": 2}, "alpha 2 is not in (0, 1)"),
    "noise-list": ({"noise": ["laplace"]}, "noise ['laplace'] is not a string"),
}
# The same for the report.
BAD_REPORT_SIDECAR = {
    "sigma-null": ({"sigma": None}, "result.sigma None is not a number"),
    "scale-infinite": ({"scale": float("inf")}, "result.scale inf is not in (0, 1e+06)"),
    "model-name-int": ({"model_name": 7}, "result.model_name 7 is not a string"),
    "code-text": ({"code": 5}, "result.code 5 is not {version, sha256} strings"),
    "num-classes-zero": ({"num_classes": 0}, "result.num_classes 0 is not between 1 and"),
    # names that would become paths
    "dataset-escapes": (
        {"dataset": "../../../../tmp/x"},
        "dataset '../../../../tmp/x' is not a plain",
    ),
    "dataset-absolute": ({"dataset": "/tmp/x"}, "dataset '/tmp/x' is not a plain name"),
    "model-name-slash": ({"model_name": "a/b"}, "model_name 'a/b' is not a plain name"),
    "training-dotdot": ({"training": ".."}, "training '..' is not a plain name"),
    "dataset-too-long": ({"dataset": "d" * 101}, "dataset 'dddddddddd"),
}
NOT_UTF8 = b"idx\tlabel\xff\xfe\n\x80\x81\x82\n"


# --- the cases ------------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    setup: tuple  # steps, each (tmp, assets) -> None
    argv: list[str]
    fragment: str
    new_ok: tuple[str, ...] = ()  # paths the call may create (relative to the case directory)
    subprocess: bool = False  # run `python -m l1cert.cli` instead of click's runner
    marks: tuple = field(default_factory=tuple)


MODEL = (copy("model.pt"),)
ROWS_EDITS = {
    "predict-banana": {"predict": "banana"},
    "radius-nan": {"radius": "nan"},
    "negative-idx": {"idx": "-4"},
    "correct-wrong": {"predict": wrong_label, "correct": "1"},
}
ROWS_FRAGMENTS = {
    "predict-banana": "predict 'banana' is not an integer",
    "radius-nan": "is not a radius",
    "negative-idx": "negative idx",
    "correct-wrong": "disagrees with predict and label",
}

CASES = [
    # certify
    Case(
        "certify-out-under-file",
        (*MODEL, write("f.txt", "hello\n")),
        [*CERTIFY, "--out", "f.txt/x.tsv"],
        "f.txt is a file",
    ),
    Case("certify-out-in-proc", MODEL, [*CERTIFY, "--out", "/proc/l1cert-x.tsv"], "/proc"),
    Case(
        "certify-out-binary-tsv",
        (*MODEL, write("out.tsv", NOT_UTF8)),
        [*CERTIFY, "--out", "out.tsv"],
        "exists without its sidecar",
    ),
    Case(
        "certify-out-binary-tsv-with-sidecar",
        (*MODEL, copy("run.tsv"), write("run.tsv", NOT_UTF8)),
        [*CERTIFY, "--out", "run.tsv"],
        "unreadable",
    ),
    Case(
        "certify-meta-sigma-abc",
        (model_with(sigma="abc"),),
        [*CERTIFY, "--out", "out.tsv"],
        "meta sigma",
    ),
    Case("certify-no-meta", (model_without_meta,), [*CERTIFY, "--out", "out.tsv"], "no meta"),
    Case(
        "certify-meta-shape-wrong",
        (model_with(input_shape=[1, 9, 9]),),
        [*CERTIFY, "--out", "out.tsv"],
        "shape [1, 9, 9]",
    ),
    Case("certify-max-0", MODEL, [*CERTIFY, "--max", "0", "--out", "out.tsv"], "--max"),
    Case(
        "certify-threads-0",
        MODEL,
        [*CERTIFY, "--threads", "0", "--out", "out.tsv"],
        "--threads must be at least 1",
    ),
    Case(
        "certify-memory",
        MODEL,
        [*CERTIFY, "--n", "1000000000000", "--batch", "1000000000", "--out", "out.tsv"],
        "GiB",
    ),
    Case("certify-alpha-nan", MODEL, [*CERTIFY, "--alpha", "nan", "--out", "out.tsv"], "--alpha"),
    Case("certify-sigma-inf", MODEL, [*CERTIFY, "--sigma", "inf", "--out", "out.tsv"], "--sigma"),
    # merge
    Case(
        "merge-out-directory",
        (copy(*SHARDS), mkdir("merged")),
        ["merge", *SHARDS, "--out", "merged"],
        "is a directory",
    ),
    Case("merge-binary-shard", (copy(*SHARDS), write(SHARDS[0], NOT_UTF8)), MERGE, "unreadable"),
    Case(
        "merge-sidecar-missing-noise",
        (copy(*SHARDS), sidecar_without(SHARDS[0], "noise")),
        MERGE,
        "shard-1-of-2.json: result lacks noise",
    ),
    *(
        Case(
            f"merge-{name}",
            (copy(*SHARDS), edit_row(SHARDS[0], **edits)),
            MERGE,
            ROWS_FRAGMENTS[name],
        )
        for name, edits in ROWS_EDITS.items()
    ),
    # report
    Case(
        "report-radii-inf",
        (copy("run.tsv"),),
        ["report", "run.tsv", "--out-dir", "rep", "--radii", "0,inf"],
        "--radii",
    ),
    Case("report-out-dir-file", (copy("run.tsv"), write("rep", "x\n")), REPORT, "is a file"),
    Case(
        "report-metrics-directory",
        (copy("run.tsv"), mkdir("m")),
        [*REPORT, "--metrics", "m"],
        "is a directory",
    ),
    Case(
        "report-fig6-sigma-negative",
        (copy("run.tsv"),),
        [*REPORT, "--fig6-sigma", "-1"],
        "--fig6-sigma",
    ),
    *(
        Case(
            f"report-{name}",
            (copy("run.tsv"), edit_row("run.tsv", **edits)),
            REPORT,
            ROWS_FRAGMENTS[name],
        )
        for name, edits in ROWS_EDITS.items()
    ),
    *(
        Case(
            f"report-sidecar-{name}",
            (copy("run.tsv"), sidecar_with("run.tsv", **changes)),
            REPORT,
            f"run.json: {fragment}",
        )
        for name, (changes, fragment) in BAD_REPORT_SIDECAR.items()
    ),
    Case(
        "report-top-class-not-integer",
        (copy("run.tsv"), edit_row("run.tsv", top_class="x")),
        REPORT,
        "top_class 'x' is not a class or -1",
    ),
    Case(
        "report-top-class-too-large",
        (copy("run.tsv"), edit_row("run.tsv", top_class="10")),
        REPORT,
        "top_class '10' is not a class or -1",
    ),
    # report: every output stays in the out dir, and none is an input
    Case(
        "report-dataset-option-escapes",
        (write("x.tsv", COHEN_SIX), mkdir("victim")),
        ["report", "x.tsv", "--out-dir", "rc", "--sigma", "0.25", "--dataset", "../../victim/x"],
        "--dataset '../../victim/x' is not a plain name",
    ),
    Case(
        "report-label-option-slash",
        (write("x.tsv", COHEN_SIX),),
        [
            "report",
            "x.tsv",
            "--out-dir",
            "rc",
            "--sigma",
            "0.25",
            "--dataset",
            "digits",
            "--label",
            "a/b",
        ],
        "--label 'a/b' is not a plain name",
    ),
    Case(
        "report-out-subfolder-links-out",
        (copy("run.tsv"), mkdir("elsewhere"), mkdir("rep"), link("rep/plots", "../elsewhere")),
        REPORT,
        "rep/plots/certified-accuracy.csv would be written outside the out dir rep",
    ),
    Case(
        "report-output-links-out",
        (copy("run.tsv"), write("victim.txt", "mine\n"), link("rep/metrics.json", "../victim.txt")),
        REPORT,
        "rep/metrics.json would be written outside the out dir rep",
    ),
    Case(
        "report-metrics-is-the-input",
        (copy("run.tsv"),),
        [*REPORT, "--metrics", "run.tsv"],
        "--metrics run.tsv is also an input (run.tsv)",
    ),
    Case(
        "report-metrics-is-an-input-sidecar",
        (copy("run.tsv"),),
        [*REPORT, "--metrics", "run.json"],
        "--metrics run.json is also an input (run.json)",
    ),
    Case(
        "report-metrics-links-to-the-input",
        (copy("run.tsv"), link("l.tsv", "run.tsv")),
        [*REPORT, "--metrics", "l.tsv"],
        "--metrics l.tsv is also an input (run.tsv)",
    ),
    Case(
        "report-metrics-hard-link-of-the-input",
        (copy("run.tsv"), link("h.tsv", "run.tsv", hard=True)),
        [*REPORT, "--metrics", "h.tsv"],
        "--metrics h.tsv is also an input (run.tsv)",
    ),
    Case(
        "report-metrics-is-another-output",
        (copy("run.tsv"),),
        [*REPORT, "--metrics", "rep/tables/envelope.csv"],
        "is also one of the report's other outputs",
    ),
    Case(
        "report-output-is-the-input",
        (copy_as("run.tsv", "rep/plots/digits-teng.csv"),),
        ["report", "rep/plots/digits-teng.csv", "--out-dir", "rep", "--radii", "0,0.25"],
        "would write rep/plots/digits-teng.csv, which is also an input",
    ),
    Case(
        "report-lock-file-is-the-input",
        (copy_as("run.tsv", "rep/.report.lock"),),
        ["report", "rep/.report.lock", "--out-dir", "rep", "--radii", "0,0.25"],
        "would write rep/.report.lock, which is also an input",
    ),
    # sidecars of the wrong type or range: resume, merge
    Case(
        "certify-resume-code-null",
        (*MODEL, copy("run.tsv"), sidecar_with("run.tsv", code=None)),
        [*CERTIFY, "--out", "run.tsv"],
        "run.json records no code digest",
    ),
    Case(
        "certify-resume-partial-code-missing",
        (*MODEL, copy_as("run.tsv", "partial/out.tsv"), sidecar_without("partial/out.tsv", "code")),
        [*CERTIFY, "--out", "out.tsv"],
        "partial/out.json records no code digest",
        new_ok=("partial/out.tsv.lock",),
    ),
    Case(
        "certify-resume-dataset-size-huge",
        (
            *MODEL,
            copy_as("run.tsv", "partial/out.tsv"),
            sidecar_with("partial/out.tsv", dataset_size=10**13),
        ),  # fmt: skip
        [*CERTIFY, "--out", "out.tsv"],
        "dataset_size 10000000000000 is not between",
        new_ok=("partial/out.tsv.lock",),
    ),
    *(
        Case(
            f"merge-sidecar-{name}",
            (copy(*SHARDS), sidecar_with(SHARDS[0], **changes)),
            MERGE,
            fragment,
        )
        for name, (changes, fragment) in BAD_SIDECAR.items()
    ),
    # a key every shard lacks: compared equal, then read
    *(
        Case(
            f"merge-sidecars-both-missing-{key}",
            (copy(*SHARDS), *(sidecar_without(shard, key) for shard in SHARDS)),
            MERGE,
            f"lacks {key}",
        )
        for key in ("num_classes", "dataset_size", "noise")
    ),
    *(
        Case(
            f"report-sidecar-missing-{key}",
            (copy("run.tsv"), sidecar_without("run.tsv", key)),
            REPORT,
            f"lacks {key}",
        )
        for key in ("num_classes", "dataset_size", "scale")
    ),
    Case(
        "report-sidecar-missing-noise",
        (copy("run.tsv"), sidecar_without("run.tsv", "noise")),
        REPORT,
        "run.json: result lacks noise",
    ),
    Case(
        "merge-sidecar-code-missing",
        (copy(*SHARDS), sidecar_without(SHARDS[0], "code")),
        MERGE,
        "shard-1-of-2.json records no code digest",
    ),
    # files that are not checkpoints
    *(
        Case(
            f"certify-model-{name}",
            (write("model.pt", content),),
            [*CERTIFY, "--out", "out.tsv"],
            "checkpoint model.pt is corrupt or not a torch file",
        )
        for name, content in NOT_CHECKPOINTS.items()
    ),
    *(
        Case(
            f"import-cohen-{name}",
            (write("ck.pth", content),),
            IMPORT,
            "checkpoint ck.pth is corrupt or not a torch file",
        )
        for name, content in NOT_CHECKPOINTS.items()
    ),
    # huge but finite: refused by their bounds before anything runs (l1cert.config)
    Case("train-lr-huge", (), [*TRAIN, "--lr", "1e308"], "--lr must be at most 10"),
    Case(
        "train-weight-decay-huge",
        (),
        [*TRAIN, "--weight-decay", "1e308"],
        "--weight-decay must be at most 1,",
    ),
    Case("train-sigma-huge", (), [*TRAIN, "--sigma", "1e308"], "--sigma must be at most 10"),
    Case(
        "train-type2-epsilon-huge",
        (),
        [*TRAIN, "--training", "type2", "--type2-epsilon", "1e308"],
        "--type2-epsilon must be at most 1000",
    ),
    Case("train-seed-2-64", (), [*TRAIN, "--seed", str(2**64)], "--seed must be at most"),
    Case("train-workers-huge", (), [*TRAIN, "--workers", "100000000"], "--workers"),
    Case(
        "certify-sigma-huge", MODEL, [*CERTIFY, "--sigma", "1e200", "--out", "out.tsv"], "--sigma"
    ),
    Case(
        "certify-batch-huge",
        MODEL,
        [*CERTIFY, "--batch", str(10**12), "--out", "out.tsv"],
        "--batch",
    ),
    # an output that is an input
    Case("certify-out-is-the-model", MODEL, [*CERTIFY, "--out", "model.pt"], "is the model"),
    Case(
        "import-out-is-the-source",
        (write("ck.pth", "x"),),
        [*IMPORT[:-2], "--out", "ck.pth"],
        "is the checkpoint to import",
    ),  # fmt: skip
    # train
    Case("train-seed-negative", (), [*TRAIN, "--seed", "-1"], "seed"),
    Case("train-workers-negative", (), [*TRAIN, "--workers", "-1"], "--workers"),
    Case("train-out-file", (write("tmp/run", "x\n"),), TRAIN, "is a file"),
    Case("train-resnet50-digits", (), [*TRAIN, "--arch", "resnet50"], "resnet50"),
    Case("train-momentum-nan", (), [*TRAIN, "--momentum", "nan"], "momentum"),
    Case(
        "train-weight-decay-nan",
        (),
        [*TRAIN, "--weight-decay", "nan"],
        "--weight-decay must be a finite number",
    ),
    Case("train-lr-inf", (), [*TRAIN, "--lr", "inf"], "lr"),
    Case(
        "train-type2-epsilon-nan",
        (),
        [*TRAIN, "--training", "type2", "--type2-epsilon", "nan"],
        "epsilon",
    ),
    Case(
        "train-type2-samples-memory",
        (),
        [*TRAIN, "--training", "type2", "--type2-samples", "10000000"],
        "--type2-samples must be at most 1024",  # its bound, before the memory check
    ),
    Case(
        "train-type2-batch-memory",
        (),
        [*TRAIN, "--training", "type2", "--type2-samples", "1024", "--batch-size", "1000000000"],
        "GiB",
    ),
    Case(
        "train-imagefolder-one-image",
        (png("data/imagefolder/train/a/x.png"), png("data/imagefolder/test/a/x.png")),
        [*TRAIN, "--dataset", "imagefolder", "--root", "data"],
        "need 2+",
    ),
    Case(
        "train-imagefolder-undecodable",
        (
            png("data/imagefolder/train/a/x.png"),
            write("data/imagefolder/train/a/y.png", GARBAGE),
            png("data/imagefolder/test/a/x.png"),
        ),
        [*TRAIN, "--dataset", "imagefolder", "--root", "data"],
        "cannot decode image",
    ),
    # data
    Case(
        "data-manifest-directory",
        (mkdir("m"),),
        ["data", "--dataset", "digits", "--manifest", "m"],
        "is a directory",
    ),
    Case(
        "data-imagefolder-undecodable",
        (
            png("data/imagefolder/train/a/x.png"),
            write("data/imagefolder/train/a/y.png", GARBAGE),
            png("data/imagefolder/test/a/x.png"),
        ),
        ["data", "--dataset", "imagefolder", "--root", "data", "--manifest", "m.json"],
        "cannot decode image",
    ),
    # radius (one through a real process: the console entry point, not click's runner)
    Case(
        "radius-pa-pb-above-1",
        (),
        ["radius", "--noise", "laplace", "--sigma", "0.5", "--pa", "0.9", "--pb", "0.5"],
        "add up to more than 1",
        subprocess=True,
    ),
    Case(
        "radius-pb-gaussian",
        (),
        ["radius", "--noise", "gaussian", "--sigma", "0.5", "--pa", "0.9", "--pb", "0.1"],
        "--pb is used by teng_multiclass only",
    ),
    # click's usage errors: one line too
    Case(
        "certify-n-1e308",
        MODEL,
        [*CERTIFY, "--n", "1e308", "--out", "o.tsv"],
        "certify: Invalid value for '--n': '1e308' is not a valid integer",
    ),  # fmt: skip
    Case(
        "radius-sigma-abc",
        (),
        ["radius", "--noise", "laplace", "--sigma", "abc", "--pa", "0.9"],
        "Invalid value for '--sigma': 'abc' is not a valid float",
    ),  # fmt: skip
    Case("unknown-command", (), ["frobnicate"], "No such command 'frobnicate'"),
    # threads bounded by the machine (torch segfaults on absurd counts)
    *(
        Case(
            f"{command}-threads-{threads}",
            MODEL if command == "certify" else (),
            [
                *(CERTIFY if command == "certify" else TRAIN),
                "--threads",
                str(threads),
                *(["--out", "o.tsv"] if command == "certify" else []),
            ],
            f"--threads {threads} exceeds this machine's"
            if threads == MORE_THAN_CPUS
            else "--threads must be at most 4096",
            subprocess=True,
        )  # fmt: skip
        for command in ("certify", "train")
        for threads in (MORE_THAN_CPUS, 100_000_000, 2**64)
    ),
    Case(
        "certify-shard-huge",
        MODEL,
        [*CERTIFY, "--shard", "1/18446744073709551616", "--out", "o.tsv"],
        "--shard must look like k/K",
    ),  # fmt: skip
    # images read at their depth
    Case(
        "data-imagefolder-48-bit",
        (png16("data/imagefolder/train/a/x.png", rgb=True), png("data/imagefolder/test/a/y.png")),
        ["data", "--dataset", "imagefolder", "--manifest", "m.json", "--image-size", "4"],
        "x.png has pixels l1cert cannot read exactly (mode RGB (RGB;16B))",
    ),  # fmt: skip
    # a checkpoint's noise state: only what its noise keeps
    Case(
        "certify-noise-state-extra-key",
        (noise_state(extra=torch.zeros(2)),),
        [*CERTIFY, "--out", "o.tsv"],
        "noise state holds 'extra', which laplace noise does not",
    ),
    Case(
        "certify-checkpoint-name-newline",
        (model_with(name="a\nb"),),
        [*CERTIFY, "--out", "o.tsv"],
        "the checkpoint's name 'a\\nb' is not a plain name",
    ),
    # what certify writes, its merge and report accept: refused at the partial's resume
    *(
        Case(
            f"certify-resume-partial-time-{name}",
            (*MODEL, copy_as("run.tsv", "partial/out.tsv"), edit_row("partial/out.tsv", time=t)),
            [*CERTIFY, "--out", "out.tsv"],
            "time",
            new_ok=("partial/out.tsv.lock",),
        )  # fmt: skip
        for name, t in (("nan", "nan"), ("inf", "inf"), ("negative", "-1"), ("abc", "abc"))
    ),
    Case(
        "report-sidecar-looks-abc",
        (copy("run.tsv"), sidecar_with("run.tsv", looks="abc")),
        REPORT,
        "looks 'abc' is not a list of increasing non-negative ints",
    ),  # fmt: skip
    Case(
        "merge-sidecar-looks-abc",
        (copy(*SHARDS), sidecar_with(SHARDS[0], looks="abc")),
        MERGE,
        "looks 'abc' is not a list of increasing non-negative ints",
    ),  # fmt: skip
    Case(
        "merge-sampling-abc",
        (copy(*SHARDS), *(sidecar_with(s, sampling="abc") for s in SHARDS)),
        MERGE,
        "unknown sampling 'abc'",
    ),  # fmt: skip
    Case(
        "report-npy-malformed-header",
        (
            write("pub/labels.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': '<i8', 'fortran"),
            write("pub/radius_l1.npy", b""),
            write("pub/predicted_labels.npy", b""),
        ),
        [
            "report",
            "pub",
            "--out-dir",
            "rep",
            "--bound",
            "uniform",
            "--sigma",
            "0.5",
            "--dataset",
            "cifar10",
        ],
        "labels.npy: not a plain numpy array file",
    ),  # fmt: skip
    Case(
        "train-out-unwritable",
        (),
        [*TRAIN[:-1], "/sys/l1cert-fuzz/run"],
        "--out /sys/l1cert-fuzz/run: cannot write there",
    ),
]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder`: file bytes, or None for a directory."""
    return {
        str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
    }


def run(case: Case) -> tuple[int, str]:
    if case.subprocess:
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        done = subprocess.run(
            [sys.executable, "-m", "l1cert.cli", *case.argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return done.returncode, done.stderr
    result = CliRunner().invoke(main, case.argv)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        trace = "".join(traceback.format_exception(result.exception))
        pytest.fail(f"uncaught exception:\n{trace}")
    return result.exit_code, result.stderr


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_is_refused_in_one_line(case: Case, assets, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for step in case.setup:
        step(tmp_path, assets)
    before = snapshot(tmp_path)

    code, stderr = run(case)

    assert code == 2, stderr
    assert stderr.endswith("\n") and stderr.count("\n") == 1, stderr
    assert stderr.startswith("l1cert: error: "), stderr
    assert "Traceback" not in stderr
    assert case.fragment in stderr, stderr
    after = snapshot(tmp_path)
    changed = [p for p in before if after.get(p, b"<removed>") != before[p]]
    assert not changed, f"changed or removed: {changed}"
    created = sorted(set(after) - set(before) - set(case.new_ok))
    assert not created, f"created: {created}"


def test_cases_have_unique_ids():
    assert len({c.id for c in CASES}) == len(CASES)
