"""dvc.yaml, written from the same job commands Snakemake runs (`l1cert.pipeline`).

DVC reads its stages from a file, not from code: `l1cert dvc-yaml` writes that file from
params.yaml, with DVC's `${...}` placeholders in place of the values (a test checks that the
committed dvc.yaml is current). Stages are grouped by what decides their results, so a type2
training or an exact noise gets a stage of its own.
"""

from __future__ import annotations

from pathlib import Path

from l1cert.layout import (
    HEADLINE,
    LOGS,
    MANIFEST,
    MODEL_DIR,
    TRAINED,
    expected_outputs,
    plot_outputs,
)
from l1cert.pipeline import (
    PARAMS,
    TRAIN_OUTS,
    Source,
    certify_command,
    code_deps,
    data_command,
    decides,
    import_command,
    merge_command,
    report_command,
    train_command,
)

_HEADER = """\
# Written by `l1cert dvc-yaml` from params.yaml (l1cert.dvc_stages, over the job commands of
# l1cert.pipeline, which Snakemake runs too): edit the pipeline there and rerun it (tests check
# this file is current). Rerun it too after changing sweep.noises, sweep.trainings or
# certify.sampling: stages are grouped by what decides their results (a type2 training has its
# own settings; an exact noise takes none of the sampling ones), so the sweep's noises and
# trainings are written here; its sigmas and everything else come from params.yaml.
# Each command names, as ${...}, the settings that decide its result: its params, so editing
# one reruns the stage. Run-only settings (certify.batch, resources.certify.threads, data.root,
# train.workers) are read from params.yaml when the stage runs (--run-params): editing them
# reruns nothing. Each stage's code deps are the modules that decide its numbers.
# A certify shard grows in partial/ (ignored by DVC, see .dvcignore) and is moved onto its
# outputs when complete.
"""


def dvc_yaml(params: dict) -> str:
    """dvc.yaml's text for the experiment whose params are `params`."""
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


def _groups(values, keys_of) -> list[tuple[str, list]]:
    """`values` grouped by the params list `keys_of(value)` gives, in order: (name suffix,
    members); the largest group (the first among equals) has no suffix."""
    groups: dict[tuple, list] = {}
    for value in values:
        groups.setdefault(tuple(keys_of(value)), []).append(value)
    members = list(groups.values())
    largest = max(members, key=len) if members else []
    return [("" if m is largest else "_" + "_".join(m), m) for m in members]


def _dvc_stages(src: Source) -> dict:
    config = src.config
    sweep, dataset = config["sweep"], "${dataset}"
    manifest = MANIFEST.format(dataset=dataset)
    trained = TRAINED.format(noise="${item.noise}", training="${item.training}",
                             sigma="${item.sigma}")  # fmt: skip
    stages = {
        "data": {
            "desc": "Fetch or verify the dataset and write its manifest.",
            "cmd": _logged(data_command(src, manifest), "data", dataset=dataset),
            "deps": code_deps("data"),
            "params": list(decides(config, "data")),
            "outs": [manifest],
        }
    }
    train_keys = lambda t: decides(config, "train", training=t)  # noqa: E731
    for suffix, trainings in _groups(sweep["trainings"], train_keys):
        out = f"results/models/{dataset}/{trained}"
        stages["train" + suffix] = {
            "desc": f"Train a base classifier per noise and sigma ({', '.join(trainings)}).",
            "matrix": {
                "noise": list(sweep["noises"]),
                "training": trainings,
                "sigma": "${sweep.sigmas}",
            },  # fmt: skip
            "cmd": _logged(
                train_command(
                    src, "${item.noise}", "${item.sigma}", trainings[0], out, "${item.training}"
                ),
                "train",
                dataset=dataset,
                model=trained,
            ),
            "deps": [manifest, *code_deps("train")],
            "params": list(decides(config, "train", training=trainings[0])),
            "outs": [f"{out}/{f}" for f in TRAIN_OUTS],
        }
    imported = config.get("models") or []
    noises = list(sweep["noises"])
    for suffix, members in _groups(noises, lambda n: decides(config, "certify", noise=n)):
        matrix = {"noise": members, "training": list(sweep["trainings"]),
                  "sigma": "${sweep.sigmas}"}  # fmt: skip
        stages["certify" + suffix] = _certify_stage(src, trained, matrix, members[0])
    if imported:
        matrix = {"model": "${models}"}
        stages["certify_imported"] = _certify_stage(src, "${item.model.name}", matrix,
                                                    imported[0]["noise"])  # fmt: skip
    merge = _merge_stage(src, trained)
    stages["merge"] = {
        "matrix": {
            "noise": noises,
            "training": list(sweep["trainings"]),
            "sigma": "${sweep.sigmas}",
        },  # fmt: skip
        **merge,
    }
    if imported:
        name = "${item.name}"
        model = f"{MODEL_DIR.format(dataset=dataset, model=name)}/model.pt"
        stages["import_model"] = {
            "foreach": "${models}",
            "do": {
                "desc": "Convert a released checkpoint into an l1cert model.",
                "cmd": _logged(
                    import_command(src, "${item}", dataset, model),
                    "import",
                    dataset=dataset,
                    model=name,
                ),
                "deps": ["${item.path}", *code_deps("import")],
                "outs": [model],
            },
        }
        stages["merge_imported"] = {"foreach": "${models}", "do": _merge_stage(src, name)}
    report_files = [str(p) for p in expected_outputs("results", [dataset])]
    plots = [str(p) for p in plot_outputs("results", [dataset])]
    metrics = "results/metrics.json"
    headline = [f for f in report_files if Path(f).parent == Path("results", HEADLINE)]
    stages["report"] = {
        "desc": "Tables, figures, captions, plot data and metrics from the merged certificates.",
        "cmd": _logged(report_command(src, f"--experiment {PARAMS}", "results", metrics), "report"),
        "deps": [f"results/certify/{dataset}", *code_deps("report")],
        "params": ["dataset", "sweep", "models", *decides(config, "report")],
        "outs": [f for f in report_files if f not in plots and f not in headline],
        "plots": [_plot(p) for p in plots],
        "metrics": headline,  # a file per bound: a row each in `dvc metrics show`
    }
    return stages


def _certify_stage(src: Source, model: str, matrix: dict, noise: str) -> dict:
    dataset = "${dataset}"
    shards_k = "${certify.shards[-1]}"
    folder = f"results/certify/{dataset}/{model}"
    out = f"{folder}/shard-${{item.shard}}-of-{shards_k}.tsv"
    model_file = f"{MODEL_DIR.format(dataset=dataset, model=model)}/model.pt"
    return {
        "desc": "Certify one shard of a model's test points.",
        "matrix": {**matrix, "shard": "${certify.shards}"},
        "cmd": _logged(
            certify_command(src, model_file, noise, f"${{item.shard}}/{shards_k}", out),
            "certify",
            dataset=dataset,
            model=model,
            shard=f"${{item.shard}}-of-{shards_k}",
        ),
        "deps": [MANIFEST.format(dataset=dataset), model_file, *code_deps("certify")],
        "params": list(decides(src.config, "certify", noise=noise)),
        "outs": [out, out.removesuffix(".tsv") + ".json"],
    }


def _merge_stage(src: Source, model: str) -> dict:
    folder = f"results/certify/${{dataset}}/{model}"
    shards = f"{folder}/shard-*-of-${{certify.shards[-1]}}.tsv"
    return {
        "desc": "Merge a model's certify shards into one file.",
        "cmd": _logged(
            merge_command(src, shards, f"{folder}.tsv"), "merge", dataset="${dataset}", model=model
        ),
        "deps": [folder, *code_deps("merge")],
        "outs": [f"{folder}.tsv", f"{folder}.json"],
    }


def _logged(command: str, stage: str, **names) -> str:
    """`command` keeping its stderr in the stage's log as Snakemake's jobs do (`l1cert --log`:
    the terminal still shows it)."""
    return command.replace("l1cert ", f"l1cert --log {LOGS[stage].format(**names)} ", 1)


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
