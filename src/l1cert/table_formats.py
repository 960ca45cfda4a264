"""Tables as text: CSV, Markdown and booktabs LaTeX, from a header and rows of cells."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence


def to_csv(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def to_markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells):
        cells = (" ".join(str(c).split()).replace("|", "\\|") for c in cells)  # one line each
        return "| " + " | ".join(cells) + " |"

    align = [
        "---" if i < 3 or not rows or not _numeric(rows[0][i]) else "---:"
        for i in range(len(header))
    ]
    return "\n".join([line(header), "| " + " | ".join(align) + " |", *map(line, rows)]) + "\n"


def _numeric(text: str) -> bool:
    try:
        float(str(text).split(" ")[0].replace(",", ""))
    except ValueError:
        return False
    return True


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "σ": r"$\sigma$",
    "α": r"$\alpha$",
    "λ": r"$\lambda$",
    "ℓ": r"$\ell$",
    "×": r"$\times$",
    "·": r"$\cdot$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "−": r"$-$",
    "–": "--",
    "—": "---",
    "á": r"\'{a}",
    "č": r"\v{c}",
}


def latex_escape(text: str) -> str:
    """`text` set as LaTeX would print it: its special characters escaped, the Greek letters
    and symbols of the captions in math mode, ℓ1 as $\\ell_1$."""
    parts = str(text).split("ℓ1")
    return r"$\ell_1$".join("".join(_LATEX_SPECIAL.get(ch, ch) for ch in p) for p in parts)


def to_latex(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    caption: str,
    label: str,
    over: Sequence[tuple[int, int, str]] = (),
    groups: dict[int, str] | None = None,
) -> str:
    """A booktabs table (needs \\usepackage{booktabs} in the document): no vertical rules,
    every cell escaped. `over`: headers above the column header, each (first column, columns,
    text) with a rule under it; `groups`: {row: title} for the rows that start a group, each
    group under its title in italics."""
    spec = "".join("r" if rows and _numeric(rows[0][i]) else "l" for i in range(len(header)))
    head = []
    if over:
        cells, rules, column = [], [], 0
        for first, span, text in over:
            cells += [""] * (first - column) + [
                rf"\multicolumn{{{span}}}{{c}}{{{latex_escape(text)}}}"
            ]
            rules.append(rf"\cmidrule(lr){{{first + 1}-{first + span}}}")
            column = first + span
        cells += [""] * (len(header) - column)
        head = [" & ".join(cells) + r" \\", "".join(rules)]
    body = []
    for i, row in enumerate(rows):
        if groups and i in groups:
            if i:
                body.append(r"\addlinespace")
            title = latex_escape(groups[i])
            body.append(rf"\multicolumn{{{len(header)}}}{{l}}{{\textit{{{title}}}}} \\")
        body.append(" & ".join(latex_escape(c) for c in row) + r" \\")
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{latex_escape(caption)}}}",
        rf"\label{{{label}}}",
        r"\setlength{\tabcolsep}{4pt}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        *head,
        " & ".join(latex_escape(h) for h in header) + r" \\",
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"
