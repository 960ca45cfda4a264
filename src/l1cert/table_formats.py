"""Tables as text: CSV, Markdown and booktabs LaTeX, from a header and rows of cells."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from itertools import pairwise


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


# Rows one float may hold: about a page at \small with its caption; longer tables are cut
# into several floats at their groups' starts, so a paper can \input the file as it is.
FLOAT_ROWS = 40


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
    group under its title in italics. More than FLOAT_ROWS rows make one float per run of whole
    groups that fits, the first with the caption and label, the others continuing it."""
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
    groups = groups or {}
    floats = []
    for part, (start, stop) in enumerate(_float_parts(len(rows), groups)):
        body = []
        for i in range(start, stop):
            if i in groups:
                if i > start:
                    body.append(r"\addlinespace")
                title = latex_escape(groups[i])
                body.append(rf"\multicolumn{{{len(header)}}}{{l}}{{\textit{{{title}}}}} \\")
            body.append(" & ".join(latex_escape(c) for c in rows[i]) + r" \\")
        named = (rf"\caption{{{latex_escape(caption)}}}" if not part
                 else rf"\caption{{Table~\ref{{{label}}}, continued.}}")  # fmt: skip
        floats.append("\n".join([
            r"\begin{table}[t]",
            r"\centering",
            r"\small",
            named,
            rf"\label{{{label}}}" if not part else rf"\label{{{label}:{part + 1}}}",
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
        ]))  # fmt: skip
    return "\n\n".join(floats) + "\n"


def _float_parts(count: int, groups: dict[int, str]) -> list[tuple[int, int]]:
    """[start, stop) row ranges of the floats: whole groups, at most FLOAT_ROWS rows each (a
    group longer than that alone in its float)."""
    starts = sorted({0, *groups} & set(range(count))) or [0]
    parts, start = [], 0
    for begin, end in pairwise([*starts, count]):
        if end - start > FLOAT_ROWS and begin > start:
            parts.append((start, begin))
            start = begin
    parts.append((start, count))
    return parts
