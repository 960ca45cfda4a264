"""The `l1cert` command line: each subcommand is a thin wrapper over a library function."""

from __future__ import annotations

import json
import sys

import click

from l1cert.config import CertifyConfig, TrainConfig, click_options, from_options
from l1cert.names import DEFAULT_RADII
from l1cert.noise import NOISES
from l1cert.utils import L1CertError, parse_radii

_NOISES = ", ".join(NOISES)


class _Group(click.Group):
    """Turns library and file-system errors into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except L1CertError as err:
            click.echo(f"l1cert: error: {err}", err=True)
            sys.exit(2)
        except OSError as err:  # a path the system refuses: say which, in one line
            where = f"{err.filename}: " if err.filename else ""
            click.echo(f"l1cert: error: {where}{err.strerror or err}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="l1cert")
def main() -> None:
    """Train randomized-smoothing classifiers and certify their l1 robustness."""


# --- certification: radius, certify, merge ------------------------------------------------


_DATA_OPTIONS = (
    click.option("--root", default="data", show_default=True, help="Where datasets live."),
    click.option("--image-size", type=int, default=32, show_default=True, help="imagefolder."),
    click.option("--imagenet-dir", help="ImageNet root (default: $IMAGENET_DIR)."),
)


def _data_options(command):
    """Where a dataset lives: shared by certify, data and train."""
    for option in reversed(_DATA_OPTIONS):
        command = option(command)
    return command


def _set_threads(threads: int | None) -> None:
    """Torch's CPU threads; a pipeline running jobs side by side gives each its cores."""
    if threads is not None:
        if threads < 1:
            raise L1CertError(f"--threads must be at least 1, got {threads}")
        import torch

        torch.set_num_threads(threads)


@main.command()
@click.option("--noise", required=True, help=f"Smoothing noise: {_NOISES}.")
@click.option("--sigma", type=float, required=True, help="Per-coordinate std of the noise.")
@click.option("--pa", type=float, required=True, help="Lower bound of the top class probability.")
@click.option("--pb", type=float, help="Upper bound of the runner-up (default 1 - pa).")
@click.option("--bound", "bounds", multiple=True, help="Only this bound (repeatable).")
def radius(noise, sigma, pa, pb, bounds):
    """Print the certified l1 radius of every bound that applies to the noise."""
    from l1cert.certificates import radii

    for bound, value in radii(noise, sigma, pa, pb, bounds).items():
        click.echo(f"{bound}\t{value:.6g}")


@main.command()
@click.option("--model", "model_path", required=True, help="Checkpoint (model.pt).")
@_data_options
@click_options(CertifyConfig)
@click.option("--shard", default="1/1", show_default=True, help="This shard k/K (1-based).")
@click.option("--shards", type=int, multiple=True, help="The pipeline's shard list 1..K.")
@click.option("--radii", help="Comma-separated l1 radii a sequential run decides.")
@click.option(
    "--from-params",
    is_flag=True,
    help="The options are a params file's certify section (the pipeline's): settings that do "
    "not apply to this model's noise are set aside with a note instead of refused.",
)
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=int, help="torch threads (default: torch's own).")
@click.option("--out", required=True, help="Output TSV (sidecar: same path, .json).")
def certify(model_path, threads, out, radii, shards, **options):
    """Certify a test split (or one shard of it) into a TSV; rerun to resume."""
    from l1cert.certify import certify_to_tsv

    _set_threads(threads)
    radii = parse_radii(radii) if radii else None
    certify_to_tsv(model_path, out, radii=radii, shard_list=shards, **options)


@main.command()
@click.argument("shards", nargs=-1, required=True)
@click.option("--out", required=True, help="Merged TSV (sidecar: same path, .json).")
def merge(shards, out):
    """Merge all shards of one certification into one TSV sorted by idx."""
    from l1cert.merge import merge_shards

    merge_shards(list(shards), out)


# --- data and training: data, train -------------------------------------------------------


@main.command()
@click.option("--dataset", required=True, help="digits, cifar10, imagenet or imagefolder.")
@_data_options
@click.option("--manifest", required=True, help="Where to write the manifest (JSON).")
def data(dataset, root, image_size, imagenet_dir, manifest):
    """Fetch or verify a dataset; write its manifest (images per class, checksum)."""
    from l1cert.data import prepare

    doc = prepare(dataset, manifest, root, image_size, imagenet_dir)
    sizes = ", ".join(f"{k} {v['images']}" for k, v in doc["splits"].items())
    click.echo(f"{dataset}: {sizes} images; sha256 {doc['checksum']['sha256'][:16]}...", err=True)


@main.command()
@click_options(TrainConfig)
@_data_options
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=int, help="torch threads (default: torch's own).")
@click.option("--out", required=True, help="Output directory; rerun with it to resume.")
def train(root, imagenet_dir, device, threads, out, **options):
    """Train a base classifier under noise (type1) or SmoothAdv (type2); rerun to resume."""
    from l1cert.train import train

    _set_threads(threads)
    metrics = train(from_options(TrainConfig, options), out, root, imagenet_dir, device)
    click.echo(json.dumps(metrics), err=True)


@main.command("import")
@click.argument("src", required=False)
@click.option("--path", "src_path", help="SRC as an option (how DVC passes a params entry).")
@click.option("--format", "fmt", required=True, help="cohen, smoothadv or torchvision.")
@click.option("--arch", help="cifar_resnet20/110 or resnet50 (default: the checkpoint's).")
@click.option("--dataset", required=True, help="cifar10 or imagenet.")
@click.option("--noise", required=True, help=f"Smoothing noise to certify with: {_NOISES}.")
@click.option("--sigma", type=float, required=True, help="Per-coordinate std of the noise.")
@click.option("--training", default="type1", show_default=True, help="type1 or type2.")
@click.option("--name", help="Model name (default: <format>-<file stem>).")
@click.option("--out", required=True, help="The l1cert checkpoint to write (model.pt).")
def import_(src, src_path, out, **options):
    """Convert a released smoothing checkpoint into an l1cert model that certify reads."""
    from l1cert.foreign import import_checkpoint

    if (src is None) == (src_path is None):
        raise L1CertError("give the checkpoint once: as SRC or as --path")
    src = src or src_path
    meta = import_checkpoint(src, out, **options)
    click.echo(f"{meta['name']}: {meta['arch']} -> {out}", err=True)


# --- results: report ----------------------------------------------------------------------


@main.command()
@click.argument("certify_files", nargs=-1)
@click.option("--out-dir", required=True, help="Writes tables/, figures/, plots/, captions/ here.")
@click.option(
    "--experiment",
    help="A params file: report exactly its grid's and models' merged files in "
    "results/certify/<dataset>/ (what DVC's report stage does), besides CERTIFY_FILES.",
)
@click.option(
    "--radii",
    default=",".join(f"{r:g}" for r in DEFAULT_RADII),
    show_default=True,
    help="Comma-separated l1 radii of the tables and metrics.",
)
@click.option("--metrics", help="metrics JSON path (default: OUT_DIR/metrics.json).")
@click.option(
    "--fig6-sigma",
    type=float,
    default=0.5,
    show_default=True,
    help="Noise std of the radius-against-pA figure.",
)
@click.option("--dataset", help="Dataset of Cohen et al.'s six-column files (default: path).")
@click.option("--label", help="Training label of Cohen et al.'s six-column files.")
@click.option(
    "--bound",
    help="Bound of published result directories (rs4a's layout: labels.npy, radius_l1.npy, "
    "predicted_labels.npy or preds.npy), e.g. dssn or uniform.",
)
@click.option(
    "--cost-radius",
    type=float,
    default=0.5,
    show_default=True,
    help="Radius of the accuracy-against-cost figure.",
)
def report(
    certify_files, out_dir, experiment, radii, metrics, fig6_sigma, dataset, label, bound,
    cost_radius,
):  # fmt: skip
    """Tables, figures, metrics and plot data from merged certify files (no model needed), and
    from published result directories beside them."""
    from l1cert.report import build_report

    if experiment:
        from l1cert.pipeline import merged_files

        certify_files = (*merged_files(experiment), *certify_files)
    if not certify_files:
        raise L1CertError("give certify files (or --experiment PARAMS)")
    radii = parse_radii(radii)
    build_report(
        certify_files, out_dir, radii, metrics, fig6_sigma, dataset, label, bound, cost_radius
    )


@main.command("dvc-yaml")
@click.option("--params", default="params.yaml", show_default=True, help="The experiment.")
@click.option("--out", default="dvc.yaml", show_default=True, help="Where to write.")
def dvc_yaml(params, out):
    """Write dvc.yaml: the pipeline's stages for DVC, from the command builders that the
    Snakefile's rules use too (its sampling decides whether certify depends on the radii)."""
    from l1cert.pipeline import write_dvc_yaml

    click.echo(f"wrote {write_dvc_yaml(params, out)}", err=True)


if __name__ == "__main__":
    main()
