"""What Snakemake's HTML report adds to l1cert's own outputs: its landing page (what the results
it reports are, read from the merged certify files' sidecars, and where the current config would
make them otherwise) and the cost of every train and certify job as Snakemake measured it.
Torch-free.
"""

from __future__ import annotations

from pathlib import Path

from l1cert.layout import CERTIFY, JOB_RECORD

# The certify settings the page shows, as the sidecars' result names them and the params key
# that sets each.
_SHOWN = {
    "sampling": "certify.sampling", "n": "certify.n", "n0": "certify.n0",
    "alpha": "certify.alpha", "seed": "certify.seed", "split": "certify.split",
    "skip": "certify.skip", "max": "certify.max", "radii": "report.radii",
    "precision": "certify.precision",
}  # fmt: skip


def describe(config: dict, out: str | Path, root: str | Path = ".") -> str:
    """Write the page (reStructuredText) for the experiment `config` whose results lie under
    `root`; return its path."""
    from l1cert import __version__, pipeline
    from l1cert.certify_format import read_sidecar
    from l1cert.provenance import code_digest
    from l1cert.utils import L1CertError, parse_radii

    dataset, sweep = config["dataset"], config["sweep"]
    models = pipeline.model_noises(config)
    found, unreadable = {}, []
    for model in models:
        path = Path(root) / (CERTIFY.format(dataset=dataset, model=model) + ".tsv")
        try:
            side = read_sidecar(path, required=False)
        except L1CertError:
            unreadable.append(path.name)
            continue
        if side:
            found[model] = side["result"]
    lines = ["l1cert experiment", "=================", ""]
    lines += [
        f"- dataset: {dataset}",
        f"- sweep: noises {', '.join(sweep['noises'])}; trainings {', '.join(sweep['trainings'])}; "
        f"sigma {', '.join(str(s) for s in sweep['sigmas'])}",
        f"- imported models: {', '.join(e['name'] for e in config.get('models') or []) or 'none'}",
        f"- report radii: {config['report']['radii']}",
    ]
    if not found:
        lines += ["", "No merged certify file yet: run the workflow first."]
    else:
        lines += ["", f"Certified ({len(found)} of {len(models)} models, from their files):", ""]
        for name, key in _SHOWN.items():
            values = sorted({_text(result.get(name)) for result in found.values()})
            lines.append(f"- {key.split('.')[-1]}: {', '.join(values)}")
        codes = sorted({r["code"]["sha256"][:12] for r in found.values()})
        lines.append(f"- code digest: {', '.join(codes)} (this l1cert {__version__}: "
                     f"{code_digest()['sha256'][:12]})")  # fmt: skip
    differ = []
    for model, result in found.items():
        wants = pipeline.decides(config, "certify", noise=models[model])
        for name, key in _SHOWN.items():
            if key not in wants:
                continue
            want = parse_radii(wants[key]) if name == "radii" else wants[key]
            if result.get(name) != want:
                differ.append(f"{key}: the config says {_text(want)}, {model} was certified "
                              f"with {_text(result.get(name))}")  # fmt: skip
    missing = [m for m in models if m not in found]
    warnings = sorted(set(differ))
    if found and missing:
        warnings.append(f"not certified yet: {', '.join(missing)}")
    if unreadable:
        warnings.append(f"unreadable sidecars: {', '.join(unreadable)}")
    stray = _stray(Path(root), dataset, models)
    if stray:
        warnings.append("results/ holds merged certify files not made by this experiment (its "
                        f"report leaves them out): {', '.join(stray)}")  # fmt: skip
    if warnings:
        lines += ["", ".. warning::", ""] + [f"   - {w}" for w in warnings]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("\n".join(lines) + "\n")
    return str(Path(out).resolve())


def _text(value) -> str:
    if isinstance(value, list):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return "none" if value is None else str(value)


def _stray(root: Path, dataset: str, models) -> list[str]:
    folder = root / Path(CERTIFY.format(dataset=dataset, model="x")).parent
    return sorted(p.name for p in folder.glob("*.tsv") if p.stem not in models)


# Snakemake's benchmark columns that the job table keeps, and their names there.
_RECORDED = {"s": "seconds", "max_rss": "max_rss_mb", "cpu_time": "cpu_seconds"}
_RECORDS = JOB_RECORD.split("{stage}")[0]  # the folder of the job records: <stage>/<dataset>/…


def job_records(root: str | Path = ".") -> list[Path]:
    """Every job record (`layout.JOB_RECORD`) under `root`."""
    return sorted(Path(root, _RECORDS).glob("*/*/**/*.tsv"))


def job_costs(records, out: str | Path, log: str | Path | None = None) -> str:
    """Summarize Snakemake's benchmark files (`layout.JOB_RECORD`, one per train or certify
    job) into one CSV at `out`: stage, job, seconds, peak resident memory (MB), CPU seconds;
    return its path (`log`: a line saying how many). The seconds are wall time as the job ran
    (jobs side by side share the cores): compare them within one run."""
    import csv
    import io

    from l1cert.utils import atomic_write_text

    rows = []
    for record in sorted(map(Path, records)):
        with open(record) as f:
            measured = list(csv.DictReader(f, delimiter="\t"))
        # named as layout.JOB_RECORD names them: <prefix><stage>/<dataset>/<job>.tsv
        stage, _, job = str(record.with_suffix("")).split(_RECORDS, 1)[-1].split("/", 2)
        for values in measured:  # one line per repeat; Snakemake runs each job once
            rows.append([stage, job, *(values.get(key, "") for key in _RECORDED)])
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["stage", "job", *_RECORDED.values()])
    writer.writerows(rows)
    atomic_write_text(out, text.getvalue())
    if log is not None:
        Path(log).write_text(f"{len(rows)} job records summarized into {out}\n")
    return str(out)
