"""The `l1cert` command line: each subcommand is a thin wrapper over a library function."""

from __future__ import annotations

import sys

import click

from l1cert.utils import L1CertError


class _Group(click.Group):
    """Turns library errors into one line on stderr and exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except L1CertError as err:
            click.echo(f"l1cert: error: {err}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="l1cert")
def main() -> None:
    """Train randomized-smoothing classifiers and certify their l1 robustness."""


# --- certification: radius, certify, merge ------------------------------------------------


# --- data and training: data, train -------------------------------------------------------


# --- results: report ----------------------------------------------------------------------


if __name__ == "__main__":
    main()
