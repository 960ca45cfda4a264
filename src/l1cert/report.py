"""The report: tables (CSV, Markdown, LaTeX), captions, metrics, plot data and figures.

Rendering only: the numbers come from `l1cert.analysis`, the figures from `l1cert.figures`.
`build_report` checks every input and every output path before it writes anything, renders
into a staging directory, and publishes the files as one transaction (`l1cert.transaction`:
a journal, then renames), so a report that fails leaves the previous one as it was, and one
killed while publishing is finished by the next run into the same folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from l1cert.analysis import accuracy_rows, all_bounds, envelopes, radius_axis, settings_text
from l1cert.captions import captions
from l1cert.config import ReportConfig
from l1cert.layout import HEADLINE, SUMMARY, TABLES, expected_outputs
from l1cert.metrics import bound_plot_csv, curve_rows, headline, metrics, summary
from l1cert.names import check_plain_name
from l1cert.publish import check_paths, publish, recover
from l1cert.runs import CertifiedRun, Naming, log, log_reads, read_runs
from l1cert.table_formats import to_csv, to_markdown
from l1cert.tables import (
    CURVE_IDENTITY,
    accuracy_table,
    cost_table,
    envelope_table,
    paper_accuracy_table,
    paper_cost_table,
    paper_envelope_table,
)
from l1cert.utils import L1CertError, json_text, parse_radii


def build_report(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    config: ReportConfig | None = None,
    metrics_path: str | Path | None = None,
    naming: Naming | None = None,
    partial: bool = False,
) -> list[Path]:
    """Tables, figures, plot data, captions and metrics from certify files; returns paths.

    `config`: the radii of the tables and metrics, and the figures' settings (ReportConfig).
    `naming` names Cohen et al.'s six-column files and published result directories (rs4a's
    layout), whose radii are those of its `bound` (see `l1cert.runs`); `partial` accepts
    shards and files missing points, which every caption then says.
    Every input is read and every output path checked (plain names, inside the out dir, none
    of them an input) before anything is written; the report then takes the out dir as one
    transaction (`l1cert.publish`): readers find the old report or the new one, never a mix.
    """
    config, naming = config or ReportConfig(), naming or Naming()
    config.validate()
    radii = parse_radii(config.radii)
    out = Path(out_dir)
    metrics_file = Path(metrics_path) if metrics_path else out / "metrics.json"
    for target in (out, metrics_file.parent):
        if target.exists() and not target.is_dir():
            raise L1CertError(f"{target} is a file, not a directory")
    if metrics_file.is_dir():
        raise L1CertError(f"--metrics {metrics_file} is a directory, not a file")
    recover(out)  # a report killed while publishing is finished before anything else
    runs = read_runs(paths, naming, partial, quiet=True)
    datasets = sorted({r.dataset for r in runs})
    for name in datasets:  # read_all checked them; this function builds paths from them
        check_plain_name("dataset", name)
    targets = expected_outputs(out, datasets, metrics_path)
    check_paths(out, targets, metrics_path, [Path(p) for p in paths])

    def render(stage: Path, metrics_stage: Path) -> list[Path]:  # under the out dir's lock
        log_reads(runs)  # all checked, the folder ours: an error before is stderr's only line
        files = _render(runs, radii, config.fig6_sigma, stage, config.cost_radius)
        metrics_stage.write_text(json_text(metrics(accuracy_rows(runs, radii), radii)))
        return [*(stage / f for f in files), metrics_stage]

    written = publish(out, targets, metrics_file, render)
    for target in written:
        log(f"wrote {target}")
    log(f"done: {len(runs)} certify file(s), {len(written)} outputs ({settings_text(runs)})")
    return written


def _render(
    runs: list[CertifiedRun], radii: list[float], fig6_sigma: float, out: Path, cost_radius
) -> list[str]:
    """Write every table, plot, figure and caption under `out`; return their relative paths."""
    from l1cert import figures  # matplotlib only when figures are drawn

    datasets = sorted({r.dataset for r in runs})
    written: list[str] = []

    def write(name: str, text: str):
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(name)

    rows = accuracy_rows(runs, radii)
    write(SUMMARY, json_text(summary(runs, radii)))
    headlines = headline(runs, cost_radius)
    for bound in all_bounds():  # a bound the runs lack: an empty row
        write(f"{HEADLINE}/{bound}.json", json_text(headlines.get(bound, {})))
    header, machine, display = accuracy_table(rows, radii)
    caption = captions(runs, radii, fig6_sigma, cost_radius)
    write("tables/certified-accuracy.csv", to_csv(header, machine))
    write("tables/certified-accuracy.md", to_markdown(header, display))
    write(
        "tables/certified-accuracy.tex",
        paper_accuracy_table(rows, radii).latex(
            caption["certified-accuracy"], "tab:certified-accuracy"
        ),
    )

    envs = envelopes(runs, radii)
    m_header, m_rows, d_header, d_rows = envelope_table(envs, radii)
    write("tables/envelope.csv", to_csv(m_header, m_rows))
    write("tables/envelope.md", to_markdown(d_header, d_rows))
    write(
        "tables/envelope.tex",
        paper_envelope_table(envs, radii).latex(caption["envelope"], "tab:envelope"),
    )
    c_header, c_machine, c_display = cost_table(runs)
    write("tables/cost.csv", to_csv(c_header, c_machine))
    write("tables/cost.md", to_markdown(c_header, c_display))
    write("tables/cost.tex", paper_cost_table(runs).latex(caption["cost"], "tab:cost"))

    radius_axes = {d: radius_axis([r for r in runs if r.dataset == d]) for d in datasets}
    write(
        "plots/certified-accuracy.csv",
        to_csv(
            [*CURVE_IDENTITY, "radius", "certified_accuracy"], list(curve_rows(runs, radius_axes))
        ),
    )
    for dataset in datasets:
        mine = [r for r in runs if r.dataset == dataset]
        for bound in all_bounds():
            write(f"plots/{dataset}-{bound}.csv", bound_plot_csv(mine, bound, radius_axes[dataset]))

    figure_files = {
        "bound-comparison": lambda stem: figures.bound_comparison(stem),
        "radius-vs-pa": lambda stem: figures.radius_vs_pa(stem, fig6_sigma),
    }
    for dataset in datasets:
        mine = [r for r in runs if r.dataset == dataset]
        axis = radius_axes[dataset]
        title = dataset  # the settings are the captions' to state
        figure_files[f"{dataset}-certified-accuracy"] = lambda stem, m=mine, g=axis, t=title: (
            figures.accuracy_per_sigma(stem, m, g, t)
        )
        figure_files[f"{dataset}-comparison"] = lambda stem, m=mine, g=axis, t=title: (
            figures.bound_comparison_per_sigma(stem, m, g, t)
        )
        figure_files[f"{dataset}-envelope"] = lambda stem, m=mine, g=axis, t=title: (
            figures.envelope(stem, m, g, t)
        )
        figure_files[f"{dataset}-cost"] = lambda stem, m=mine, t=title: figures.cost(
            stem, m, cost_radius, t
        )
    (out / "figures").mkdir(exist_ok=True)
    for name, draw in figure_files.items():
        for path in draw(out / "figures" / name):
            written.append(str(path.relative_to(out)))

    for name in (*TABLES, *figure_files):
        write(f"captions/{name}.rst", caption[name] + "\n")
    return written
