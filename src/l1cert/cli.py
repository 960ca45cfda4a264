"""The `l1cert` command line: each subcommand is a thin wrapper over a library function."""

from __future__ import annotations

import json
import sys

import click

from l1cert.config import CertifyConfig, DataConfig, ReportConfig, TrainConfig
from l1cert.fields import click_options, from_options
from l1cert.noise import NOISES
from l1cert.utils import L1CertError

_NOISES = ", ".join(NOISES)
# The settings each command takes, one config per class (tests parse commands with them).
COMMAND_CONFIGS = {
    "data": (DataConfig,),
    "train": (TrainConfig, DataConfig),
    "certify": (CertifyConfig, DataConfig),
    "report": (ReportConfig,),
}


class _Group(click.Group):
    """Turns library, file-system and usage errors into one line on stderr and exit code 2."""

    def main(self, args=None, *rest, **kwargs):
        args = sys.argv[1:] if args is None else list(args)
        try:
            _finish_publishing(_keep_log(args))
            return super().main(args, *rest, standalone_mode=False, **kwargs)
        except L1CertError as err:
            _fail(str(err))
        except OSError as err:
            _fail(_os_error(err))
        except click.exceptions.Exit as done:  # --help, --version
            sys.exit(done.exit_code)
        except click.Abort:
            click.echo("l1cert: aborted", err=True)
            sys.exit(1)
        except click.UsageError as err:  # an unknown option, --n 1e308, --sigma abc
            command = f"{err.ctx.command_path}: " if err.ctx else ""
            _fail(f"{command}{err.format_message()}".replace("\n", " "))

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except L1CertError as err:
            _fail(str(err))
        except OSError as err:
            _fail(_os_error(err))


def _keep_log(args: list[str]) -> list[str]:
    """`l1cert --log FILE <command>`: everything the command writes to stderr is kept in FILE
    too (what a DVC stage does to keep a log per job, as Snakemake's jobs do), from before the
    command line is parsed, so that a usage error is in it as well. Returns the arguments after
    the option, where the pre-pass looks for the command (click parses the whole line)."""
    import atexit
    from pathlib import Path

    from l1cert.utils import LoggedStream

    if args[:1] == ["--log"] and len(args) > 1:
        path, rest = args[1], args[2:]
    elif args and args[0].startswith("--log="):
        path, rest = args[0].removeprefix("--log="), args[1:]
    else:
        return args
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = LoggedStream(sys.stderr, open(path, "w"))
    sys.stderr = stream
    atexit.register(stream.close_log)
    return rest


def _os_error(err: OSError) -> str:
    """A path the system refuses, in one line that says which."""
    where = f"{err.filename}: " if err.filename else ""
    return f"{where}{err.strerror or err}"


# The commands that publish through a journal (l1cert.transaction), their output option and
# what finishes a publication a killed run left there. Done before the command line is even
# parsed: a run that then fails on its own input still leaves the place all old or all new.
_PUBLISHING = {
    "certify": ("--out", "l1cert.resume"),
    "merge": ("--out", "l1cert.merge"),
    "report": ("--out-dir", "l1cert.publish"),
}


def _finish_publishing(args: list[str]) -> None:
    import importlib

    command = next((a for a in args if not a.startswith("-")), None)
    if command not in _PUBLISHING:
        return
    option, module = _PUBLISHING[command]
    for i, arg in enumerate(args):
        value = args[i + 1] if arg == option and i + 1 < len(args) else None
        value = arg.removeprefix(f"{option}=") if arg.startswith(f"{option}=") else value
        if value:
            importlib.import_module(module).finish_publishing(value)


def _fail(message: str) -> None:
    one_line = message.replace("\r", "\\r").replace("\n", "\\n")  # a path may hold them
    click.echo(f"l1cert: error: {one_line}", err=True)
    sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="l1cert")
@click.option(
    "--log",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Keep a copy of everything written to stderr in FILE (a job's log).",
)
def main(log) -> None:
    """Train randomized-smoothing classifiers and certify their l1 robustness."""


# --- certification: radius, certify, merge ------------------------------------------------


_RUN_PARAMS = click.option(
    "--run-params",
    type=click.Path(dir_okay=False),
    help="A params file to take the run-only settings from that the command line does not give "
    "(data.root, certify.batch, train.workers, resources.*.threads): how DVC's stages pass them "
    "without naming their values.",
)


def _configs(options: dict, run_params: str | None, *classes):
    """One config per class from a command's options (each takes its own fields), the run-only
    settings not given taken from the --run-params file."""
    from l1cert.fields import cli_fields

    params = _read_params(run_params) if run_params else None
    configs = []
    for cls in classes:
        mine = {name: options.pop(name) for name, _ in cli_fields(cls) if name in options}
        configs.append(from_options(cls, mine, params))
    return configs


def _read_params(path: str) -> dict:
    import yaml

    try:
        params = yaml.safe_load(open(path).read())
    except (OSError, yaml.YAMLError) as err:
        raise L1CertError(f"--run-params {path}: {err}") from None
    if not isinstance(params, dict):
        raise L1CertError(f"--run-params {path}: not a params file")
    return params


@main.command()
@click.option("--noise", required=True, help=f"Smoothing noise: {_NOISES}.")
@click.option("--sigma", type=float, required=True, help="Per-coordinate std of the noise.")
@click.option("--pa", type=float, required=True, help="Lower bound of the top class probability.")
@click.option("--pb", type=float, help="Upper bound of the runner-up (default 1 - pa).")
@click.option("--bound", "bounds", multiple=True, help="Only this bound (repeatable).")
def radius(noise, sigma, pa, pb, bounds):
    """Print the certified l1 radius of every bound that applies to the noise."""
    from l1cert.bounds import radius_per_bound

    for bound, value in radius_per_bound(noise, sigma, pa, pb, bounds).items():
        click.echo(f"{bound}\t{value:.6g}")


@main.command()
@click.option("--model", "model_path", required=True, help="Checkpoint (model.pt).")
@click_options(CertifyConfig)
@click_options(DataConfig)
@_RUN_PARAMS
@click.option("--shard", default="1/1", show_default=True, help="This shard k/K (1-based).")
@click.option("--device", default="auto", show_default=True)
@click.option("--out", required=True, help="Output TSV (sidecar: same path, .json).")
def certify(model_path, shard, device, out, run_params, **options):
    """Certify a test split (or one shard of it) into a TSV; rerun to resume."""
    from l1cert.certify import certify_to_tsv

    config, data = _configs(options, run_params, *COMMAND_CONFIGS["certify"])
    certify_to_tsv(model_path, out, config, data=data, shard=shard, device=device)


@main.command()
@click.argument("shards", nargs=-1, required=True)
@click.option("--out", required=True, help="Merged TSV (sidecar: same path, .json).")
def merge(shards, out):
    """Merge all shards of one certification into one TSV sorted by idx."""
    from l1cert.merge import merge_shards

    merge_shards(list(shards), out)


# --- data and training: data, train -------------------------------------------------------


@main.command()
@click_options(DataConfig)
@_RUN_PARAMS
@click.option("--manifest", required=True, help="Where to write the manifest (JSON).")
def data(manifest, run_params, **options):
    """Fetch or verify a dataset; write its manifest (images per class, checksum)."""
    from l1cert.data import prepare

    (config,) = _configs(options, run_params, *COMMAND_CONFIGS["data"])
    doc = prepare(manifest, config)
    sizes = ", ".join(f"{k} {v['images']}" for k, v in doc["splits"].items())
    click.echo(
        f"{config.dataset}: {sizes} images; sha256 {doc['checksum']['sha256'][:16]}...", err=True
    )


@main.command()
@click_options(TrainConfig)
@click_options(DataConfig)
@_RUN_PARAMS
@click.option("--device", default="auto", show_default=True)
@click.option("--out", required=True, help="Output directory; rerun with it to resume.")
def train(device, out, run_params, **options):
    """Train a base classifier under noise (type1) or SmoothAdv (type2); rerun to resume."""
    from l1cert.train import train

    config, data = _configs(options, run_params, *COMMAND_CONFIGS["train"])
    metrics = train(config, out, data, device)
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
    help="A params file: report exactly its sweep's and models' merged files in "
    "results/certify/<dataset>/ (what DVC's report stage does), besides CERTIFY_FILES.",
)
@click_options(ReportConfig)
@click.option("--metrics", help="metrics JSON path (default: OUT_DIR/metrics.json).")
@click.option("--dataset", help="Dataset of foreign inputs (default: from their own names).")
@click.option("--label", help="Training label of foreign inputs.")
@click.option("--sigma", type=float, help="Noise std of foreign inputs (default: their names').")
@click.option(
    "--bound",
    help="Bound of published result directories (rs4a's layout: labels.npy, radius_l1.npy, "
    "predicted_labels.npy or preds.npy), e.g. dssn or uniform.",
)
@click.option(
    "--partial",
    is_flag=True,
    help="Report shards and files missing points as partial results (every caption says so).",
)
def report(certify_files, out_dir, experiment, metrics, dataset, label, sigma, bound, partial,
           **options):  # fmt: skip
    """Tables, figures, metrics and plot data from merged certify files (no model needed), and
    from published result directories beside them."""
    from l1cert.report import build_report
    from l1cert.runs import Naming

    if experiment:
        from l1cert.pipeline import merged_files

        certify_files = (*merged_files(experiment), *certify_files)
    if not certify_files:
        raise L1CertError("give certify files (or --experiment PARAMS)")
    (config,) = _configs(options, None, *COMMAND_CONFIGS["report"])
    naming = Naming(dataset=dataset, label=label, sigma=sigma, bound=bound)
    build_report(certify_files, out_dir, config, metrics, naming, partial)


@main.command("dvc-yaml")
@click.option("--params", default="params.yaml", show_default=True, help="The experiment.")
@click.option("--out", default="dvc.yaml", show_default=True, help="Where to write.")
def dvc_yaml(params, out):
    """Write dvc.yaml: the pipeline's stages for DVC, from the command builders that the
    Snakefile's rules use too (its sampling decides whether certify depends on the radii)."""
    from l1cert.dvc_stages import write_dvc_yaml

    click.echo(f"wrote {write_dvc_yaml(params, out)}", err=True)


if __name__ == "__main__":
    main()
