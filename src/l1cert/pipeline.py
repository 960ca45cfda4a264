"""The pipeline's command lines and code dependencies, said once for both engines.

Each step's `l1cert` command is built by one function here from a `Source`: Snakemake's rules
call it with the experiment's config (values, quoted for the shell), and `dvc_yaml` calls it with
DVC's `${...}` placeholders, which DVC fills from params.yaml, to write dvc.yaml (`l1cert
dvc-yaml`; a test checks that the committed file is current). Both engines also take each
step's code from `code_deps`, the modules its command runs, so they agree on what an edit
makes stale. Torch-free: Snakemake imports it to build its DAG.
"""

from __future__ import annotations

import dataclasses
import functools
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

from l1cert.config import CertifyConfig, TrainConfig, field_schema, section_schema
from l1cert.provenance import PACKAGE_DIR, command_closure, module_file

MANIFEST = "results/data/{dataset}.json"
TRAINED = "{noise}-{training}-s{sigma}"
TRAIN_OUTS = ("model.pt", "train-log.csv", "metrics.json")  # metrics: an output, not a DVC metric


@dataclass(frozen=True)
class Source:
    """Where a command takes its settings: the experiment's `config` itself (Snakemake), or,
    with `dvc`, `${key}` placeholders that DVC fills from params.yaml (the structure of the
    command, such as sequential sampling's radii, still follows `config`)."""

    config: dict
    dvc: bool = False

    def value(self, key: str) -> str:
        """The setting at dotted `key` (certify.n), as one shell word."""
        return "${" + key + "}" if self.dvc else shlex.quote(str(self._at(key)))

    def section(self, key: str, **override) -> str:
        """A whole params section as options (--batch_size 64 --type2.norm linf), spelled as
        DVC's dict unpacking writes it; lists become repeated options (.dvc/config's
        `parsing.list: append`). `override` replaces keys of the section (Snakemake only)."""
        return "${" + key + "}" if self.dvc else cli_options({**self._at(key), **override})

    def _at(self, key: str):
        node = self.config
        for part in key.split("."):
            node = node[part]
        return node

    def path(self, path: str) -> str:
        return path if self.dvc else shlex.quote(str(path))


def cli_options(section: dict, prefix: str = "") -> str:
    """A params section as `l1cert` options, as DVC's `${section}` writes them."""
    options = []
    for key, value in section.items():
        if isinstance(value, dict):
            options.append(cli_options(value, f"{prefix}{key}."))
        elif isinstance(value, list):
            options += [f"--{prefix}{key} {shlex.quote(str(v))}" for v in value]
        else:
            options.append(f"--{prefix}{key} {shlex.quote(str(value))}")
    return " ".join(o for o in options if o)


def _data(src: Source) -> str:
    # double quotes for both engines: the schema keeps quotes, `$` and backslashes out of it
    root = "${data.root}" if src.dvc else src.config["data"]["root"]
    return f'--root "{root}" --image-size {src.value("data.image_size")}'


def data_command(src: Source, dataset: str, manifest: str) -> str:
    return f"l1cert data --dataset {dataset} {_data(src)} --manifest {src.path(manifest)}"


def train_command(src, dataset, noise, sigma, training, threads, out) -> str:
    return (
        f"l1cert train --dataset {dataset} {src.section('train')} --noise {noise} "
        f"--sigma {sigma} --training {training} {_data(src)} --device auto "
        f"--threads {threads} --out {src.path(out)}"
    )


def import_command(src: Source, entry: str, dataset: str, out: str) -> str:
    """`entry`: the model's params entry as options (DVC: `${item}`)."""
    return f"l1cert import {entry} --dataset {dataset} --out {src.path(out)}"


def certify_command(src: Source, model: str, shard: str, threads, out: str) -> str:
    """Sequential sampling decides the report's radii: only then do they enter the command
    (DVC: as params.yaml says when dvc.yaml is written), so a fixed run is not redone when only
    the report radii change. `shard` is k/K; the shard list goes along as 1..K (Snakemake's
    scatter count may override certify.shards)."""
    radii = f" --radii {src.value('report.radii')}" if _sequential(src) else ""
    if src.dvc:  # DVC passes certify.shards itself, which the schema keeps 1..K
        section = src.section("certify")
    else:
        total = int(shard.rsplit("/", 1)[1])
        section = src.section("certify", shards=list(range(1, total + 1)))
    return (
        f"l1cert certify --model {src.path(model)} {section} --from-params --shard {shard}{radii} "
        f"{_data(src)} --device auto --threads {threads} --out {src.path(out)}"
    )


def merge_command(src: Source, shards: str, out: str) -> str:
    return f"l1cert merge {shards} --out {src.path(out)}"


def report_command(src: Source, inputs: str, out_dir: str, metrics: str) -> str:
    """`inputs`: the merged files (Snakemake), or for DVC `--experiment params.yaml`: exactly
    the grid's and models' files, which DVC's templating cannot list."""
    return (
        f"l1cert report {inputs} --out-dir {src.path(out_dir)} --radii "
        f"{src.value('report.radii')} --metrics {src.path(metrics)}"
    )


def trained_names(grid: dict) -> list[str]:
    """The grid's models, <noise>-<training>-s<sigma>, sigma as Python writes the params value
    (0.5, 1.0, 2): the text DVC's ${item.sigma} gives, so both engines agree on paths."""
    return [
        TRAINED.format(noise=n, training=t, sigma=s)
        for n in grid["noises"] for t in grid["trainings"] for s in grid["sigmas"]
    ]  # fmt: skip


def model_names(params: dict) -> list[str]:
    """Every model of an experiment: the grid's and the imported ones (named by their entry)."""
    return trained_names(params["grid"]) + [e["name"] for e in params.get("models") or []]


def merged_files(params_path: str | Path, root: str | Path = "results/certify") -> list[Path]:
    """The merged certify file of every model of the experiment in `params_path`."""
    import yaml

    from l1cert.utils import L1CertError

    try:
        params = yaml.safe_load(Path(params_path).read_text())
        dataset, names = params["dataset"], model_names(params)
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as err:
        raise L1CertError(f"--experiment {params_path}: not an experiment ({err})") from None
    return [Path(root) / str(dataset) / f"{name}.tsv" for name in names]


def _sequential(src: Source) -> bool:
    return src.config["certify"]["sampling"] == "sequential"


def params_schema(base: str | Path) -> dict:
    """The params schema: `base` (the hand-written sections) with `train:` and `certify:`
    generated from TrainConfig and CertifyConfig, and the names (datasets, noises, trainings)
    from their registries. certify also holds the pipeline's shard list, and sequential
    sampling needs n to reach its first round."""
    import yaml

    from l1cert.names import DATASETS, TRAININGS
    from l1cert.noise import NOISES
    from l1cert.sequential import FIRST_LOOK

    schema = yaml.safe_load(Path(base).read_text())
    top, grid = schema["properties"], schema["properties"]["grid"]["properties"]
    model = top["models"]["items"]["properties"]
    top["dataset"]["enum"] = list(DATASETS)
    grid["noises"]["items"]["enum"] = model["noise"]["enum"] = list(NOISES)
    grid["trainings"]["items"]["enum"] = model["training"]["enum"] = list(TRAININGS)
    sigma = field_schema(next(f for f in dataclasses.fields(TrainConfig) if f.name == "sigma"))
    grid["sigmas"]["items"] = {**sigma, "description": grid["sigmas"]["description"]}
    model["sigma"] = sigma
    schema["properties"]["train"] = section_schema(TrainConfig)
    certify = section_schema(CertifyConfig)
    certify["properties"]["shards"] = schema["$defs"]["shards"]
    certify["required"].append("shards")  # both engines iterate over it
    certify["if"] = {"properties": {"sampling": {"const": "sequential"}}}
    certify["then"] = {"properties": {"n": {"minimum": FIRST_LOOK}}}
    schema["properties"]["certify"] = certify
    return schema


def coerce_numbers(node, schema: dict):
    """`node` with the strings that the schema wants as numbers converted (Snakemake's
    `--config 'grid={"sigmas":[0.5,0.75]}'` passes them as strings); anything else as is, for
    the schema to judge."""
    kind = schema.get("type")
    if isinstance(node, dict) and kind == "object":
        properties = schema.get("properties", {})
        return {k: coerce_numbers(v, properties.get(k, {})) for k, v in node.items()}
    if isinstance(node, list) and kind == "array":
        return [coerce_numbers(v, schema.get("items", {})) for v in node]
    if isinstance(node, str) and kind in ("number", "integer"):
        try:
            return int(node) if kind == "integer" else float(node)
        except ValueError:
            return node
    return node


@functools.cache
def params_schema_file(base: str | Path) -> str:
    """`params_schema(base)` written to a temporary YAML file (Snakemake's `validate` takes a
    path); its absolute path."""
    import yaml

    text = yaml.safe_dump(params_schema(base), sort_keys=False, allow_unicode=True)
    handle = tempfile.NamedTemporaryFile(
        "w", prefix="l1cert-params-schema-", suffix=".yaml", delete=False
    )
    with handle:
        handle.write(text)
    return str(Path(handle.name).resolve())


def describe(config: dict, out: str | Path, results: str | Path = "results") -> str:
    """Write the landing page of Snakemake's HTML report (reStructuredText): what the
    experiment is — dataset, grid, models, sampling, n, α, the code — and a warning listing any
    merged certify file in `results` that this experiment did not make. Returns its path."""
    from l1cert import __version__
    from l1cert.provenance import code_digest

    certify, dataset = config["certify"], config["dataset"]
    expected = {f"{name}.tsv" for name in model_names(config)}
    found = sorted(p.name for p in (Path(results) / "certify" / str(dataset)).glob("*.tsv"))
    stray = [name for name in found if name not in expected]
    grid = config["grid"]
    lines = [
        "l1cert experiment",
        "=================",
        "",
        f"- dataset: {dataset}",
        f"- grid: noises {', '.join(grid['noises'])}; trainings {', '.join(grid['trainings'])}; "
        f"sigma {', '.join(str(s) for s in grid['sigmas'])}",
        f"- imported models: {', '.join(e['name'] for e in config.get('models') or []) or 'none'}",
        f"- certification: {certify['sampling']} sampling, n = {certify['n']}, "
        f"n0 = {certify['n0']}, alpha = {certify['alpha']}, every {certify['skip']}-th "
        f"{certify['split']} point, {len(certify['shards'])} shard(s) per model; DSSN models "
        "are certified exactly",
        f"- report radii: {config['report']['radii']}",
        f"- code: l1cert {__version__}, code digest {code_digest()['sha256'][:12]}",
    ]
    if stray:
        lines += ["", ".. warning::", "", "   results/ holds merged certify files not made by "
                  f"this experiment (its report leaves them out): {', '.join(stray)}"]  # fmt: skip
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("\n".join(lines) + "\n")
    return str(Path(out).resolve())


def code_deps(command: str, absolute: bool = False) -> list[str]:
    """The source files `l1cert COMMAND` runs, as paths from the project root (DVC's deps
    live in the repository), or `absolute`: the files of the l1cert that runs (Snakemake's,
    wherever the workflow is)."""
    root = PACKAGE_DIR.parents[1]
    files = [module_file(m) for m in command_closure(command)]
    return [str(f) if absolute else str(f.relative_to(root)) for f in files]


# --- dvc.yaml -------------------------------------------------------------------------------

_HEADER = """\
# Written by `l1cert dvc-yaml` from l1cert.pipeline, which also builds Snakemake's command lines:
# edit the pipeline there and rerun it (tests/test_workflow.py checks this file is current).
# The same steps as the Snakefile over params.yaml: Snakemake runs jobs in parallel and on
# clusters; `dvc repro` rebuilds what changed, one stage at a time, and `dvc push` / `dvc pull`
# share the results. Each stage's code deps are the modules its command runs. `${train}` and
# `${certify}` pass whole sections as options (lists repeated: .dvc/config parsing.list append).
# certify.shards is the list 1..K, so its last item is K. A certify shard grows in partial/
# (ignored by DVC, see .dvcignore) and is moved onto its outputs when complete.
"""


def dvc_yaml(params: dict) -> str:
    """dvc.yaml's text for an experiment whose params are `params` (its sampling decides
    whether certify depends on the report radii)."""
    import yaml

    stages = _dvc_stages(Source(params, dvc=True))

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data):  # write each matrix out, no &id anchors
            return True

    def string(dumper, text):
        style = ">" if len(text) > 90 and "\n" not in text else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)

    Dumper.add_representer(str, string)
    body = yaml.dump({"stages": stages}, Dumper=Dumper, sort_keys=False, width=96)
    return _HEADER + "\n" + body


def _dvc_stages(src: Source) -> dict:
    from l1cert.report import expected_outputs, plot_outputs

    dataset = "${dataset}"
    manifest = MANIFEST.format(dataset=dataset)
    trained = TRAINED.format(noise="${item.noise}", training="${item.training}",
                             sigma="${item.sigma}")  # fmt: skip
    grid = {"noise": "${grid.noises}", "training": "${grid.trainings}", "sigma": "${grid.sigmas}"}
    shards_k = "${certify.shards[-1]}"
    certify_params = ["data", "certify"] + (["report.radii"] if _sequential(src) else [])

    def certify_stage(model: str, matrix: dict) -> dict:
        folder = f"results/certify/{dataset}/{model}"
        out = f"{folder}/shard-${{item.shard}}-of-{shards_k}.tsv"
        shard = f"${{item.shard}}/{shards_k}"
        threads = "${resources.certify.threads}"
        model_file = f"results/models/{dataset}/{model}/model.pt"
        return {
            "matrix": {**matrix, "shard": "${certify.shards}"},
            "cmd": certify_command(src, model_file, shard, threads, out),
            "deps": [manifest, model_file, *code_deps("certify")],
            "params": certify_params,
            "outs": [out, out.removesuffix(".tsv") + ".json"],
        }

    def merge_stage(model: str) -> dict:
        folder = f"results/certify/{dataset}/{model}"
        shards = f"{folder}/shard-*-of-{shards_k}.tsv"
        return {
            "cmd": merge_command(src, shards, f"{folder}.tsv"),
            "deps": [folder, *code_deps("merge")],
            "params": ["certify.shards"],
            "outs": [f"{folder}.tsv", f"{folder}.json"],
        }

    imported = "${item.name}"
    report_files = [str(p) for p in expected_outputs("results", [dataset])]
    plots = [str(p) for p in plot_outputs("results", [dataset])]
    metrics, summary = "results/metrics.json", "results/summary.json"
    return {
        "data": {
            "cmd": data_command(src, dataset, manifest),
            "deps": code_deps("data"),
            "params": ["dataset", "data"],
            "outs": [manifest],
        },
        "train": {
            "matrix": grid,
            "cmd": train_command(
                src,
                dataset,
                "${item.noise}",
                "${item.sigma}",
                "${item.training}",
                "${resources.train.threads}",
                f"results/models/{dataset}/{trained}",
            ),  # fmt: skip
            "deps": [manifest, *code_deps("train")],
            "params": ["dataset", "data", "train"],
            "outs": [f"results/models/{dataset}/{trained}/{f}" for f in TRAIN_OUTS],
        },
        "import_model": {
            "foreach": "${models}",
            "do": {
                "cmd": import_command(
                    src, "${item}", dataset, f"results/models/{dataset}/{imported}/model.pt"
                ),
                "deps": ["${item.path}", *code_deps("import")],
                "outs": [f"results/models/{dataset}/{imported}/model.pt"],
            },
        },  # fmt: skip
        "certify": certify_stage(trained, grid),
        "certify_imported": certify_stage("${item.model.name}", {"model": "${models}"}),
        "merge": {"matrix": grid, **merge_stage(trained)},
        "merge_imported": {"foreach": "${models}", "do": merge_stage(imported)},
        "report": {
            "cmd": report_command(src, "--experiment params.yaml", "results", metrics),
            "deps": [f"results/certify/{dataset}", *code_deps("report")],
            "params": ["dataset", "grid", "models", "report"],
            "outs": [f for f in report_files if f not in plots and f != summary],
            "plots": [_plot(p) for p in plots],
            "metrics": [summary],
        },
    }


def _plot(path: str):
    """A figure is shown as it is; the long plot data draws one curve per model, a panel per
    training and bound (workflow/plots/by-model.json)."""
    if not path.endswith(".csv"):
        return path
    props = {"x": "radius", "y": "certified_accuracy", "template": PLOT_TEMPLATE}
    return {path: props}


PLOT_TEMPLATE = "workflow/plots/by-model.json"


def write_dvc_yaml(params_path: str | Path, out: str | Path) -> Path:
    """Write dvc.yaml for the params file at `params_path` (atomically)."""
    import yaml

    from l1cert.utils import L1CertError, atomic_write_text

    try:
        params = yaml.safe_load(Path(params_path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise L1CertError(f"cannot read {params_path}: {err}") from None
    atomic_write_text(out, dvc_yaml(params))
    return Path(out)
