"""How a setting is declared: a dataclass field with its default, type, bounds, checks and help,
where the params file holds it, and whether it decides the result (`l1cert.config` declares the
stages' settings with it, and its module docstring says what `decides` means).

From such fields this module makes the command-line options (`click_options`), the configs a
command builds from its options and a params file (`from_options`), the checks (`check_field`,
`Checked.validate`), what decides a run in a context (`decides`, `Checked.deciding`,
`params_decisions`) and the params schema's sections (`section_schema`). One validator
(`value_problem`) judges numbers here and in certify sidecars. Torch-free.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import field

from l1cert.names import check_choice
from l1cert.utils import L1CertError

_SECTION = "{section}.{name}"  # a field's params key unless it says otherwise


def option(default, help: str, *, decides=True, key=_SECTION, low=None, high=None,
            low_open=False, high_open=False, choices=None, check=None, machine=False,
            what=None):  # fmt: skip
    """A field with its help, checks and declaration. `decides`: see the module docstring.
    `key`: its params key ({section} and {name} filled in; None: not in the params file).
    `choices`: a tuple, or a function giving one (read from a registry); `what` names them in
    messages (default: the field's name). `check(value, option)`: refuses what bounds cannot
    say (radii; `machine`: a check against the machine it runs on, the CPUs)."""
    bounds = dict(low=low, high=high, low_open=low_open, high_open=high_open)
    meta = dict(help=help, decides=decides, key=key, choices=choices, check=check,
                machine=machine, what=what)  # fmt: skip
    return field(default=default, metadata={**meta, **bounds})


def section(cls):
    """A nested section of one training objective's settings (None: its defaults)."""
    return field(default=None, metadata={"section": cls})


def _choices(f: dataclasses.Field) -> tuple[str, ...] | None:
    choices = f.metadata.get("choices")
    return choices() if callable(choices) else choices


def check_field(f: dataclasses.Field, value, prefix: str = "", machine: bool = True):
    """`value` if it has the field's type and passes its bounds and check; else one line naming
    the option (`prefix`: "type2 " for a nested config's). `machine`: also the checks against
    this machine (a cluster's jobs run elsewhere)."""
    meta, kind, name = f.metadata, f.type, prefix + f.name
    option = "--" + name.replace(" ", "-").replace("_", "-")
    if kind == "str":
        choices, what = _choices(f), prefix + (meta["what"] or f.name)
        if choices:
            check_choice(what, value, tuple(choices))
        elif not isinstance(value, str):
            raise L1CertError(f"{option} must be text, got {value!r}")
        _check(meta, value, option, machine)
        return value
    if kind == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
        raise L1CertError(f"{option} must be an integer, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise L1CertError(f"{option} must be a finite number, got {value!r}")
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value <= low if meta["low_open"] else value < low):
        floor = "a positive number" if low == 0 and meta["low_open"] else f"at least {low:g}"
        raise L1CertError(f"{option} must be {floor}, got {value!r}")
    if high is not None and (value >= high if meta["high_open"] else value > high):
        ceiling = f"below {high:g}" if meta["high_open"] else f"at most {high:g}"
        raise L1CertError(f"{option} must be {ceiling}, got {value!r}")
    _check(meta, value, option, machine)
    return value


def _check(meta, value, option: str, machine: bool) -> None:
    if meta["check"] is not None and (machine or not meta["machine"]):
        meta["check"](value, option)


class Checked:
    """`validate()` checks every field that has a value (None: not given, a default applies).

    SECTION names the params section whose keys are `{section}.{name}`."""

    SECTION = ""

    def validate(self, prefix: str = "") -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Checked):
                value.validate(f"{prefix}{f.name} ")
            elif "help" in f.metadata and value is not None:
                check_field(f, value, prefix)
        if self.required():
            raise L1CertError(f"--{self.required()[0].replace('_', '-')} is required")

    def required(self) -> list[str]:
        """The settings a run cannot go without that were not given."""
        return []

    def deciding(self, **context) -> dict:
        """{name: value} of the settings that decide this run's result (`context`: dataset,
        training, takes — the sampling mode's settings); nested sections as dicts."""
        found = {}
        for f in dataclasses.fields(self):
            if "section" in f.metadata:
                if context.get("training") == f.name:
                    section = getattr(self, f.name) or f.metadata["section"]()
                    found[f.name] = section.deciding(**context)
            elif "help" in f.metadata and decides(f, **context) is True:
                found[f.name] = getattr(self, f.name)
        return found


def decides(f: dataclasses.Field, dataset=None, training=None, takes=()) -> bool | None:
    """Whether field `f` decides the result of a run in this context (True), is run-only
    (False), or does not apply to it (None: a sampling setting its mode does not take, the image
    size of a dataset that has fixed ones, another objective's section); see the module
    docstring."""
    if "section" in f.metadata:
        return True if training == f.name else None
    rule = f.metadata["decides"]
    if rule == "mode":
        return True if f.name in takes else None
    if rule == "imagefolder":
        return True if dataset == "imagefolder" else None
    return bool(rule)


def cli_fields(cls) -> list[tuple[str, dataclasses.Field]]:
    """(option name, field) of every setting a command takes: a nested section's as
    <section>_<name> (type2_norm)."""
    found = []
    for f in dataclasses.fields(cls):
        if "section" in f.metadata:
            found += [(f"{f.name}_{g.name}", g) for g in dataclasses.fields(f.metadata["section"])]
        elif "help" in f.metadata:
            found.append((f.name, f))
    return found


def params_key(cls, f: dataclasses.Field) -> str | None:
    """Where the params file holds field `f` of `cls` (None: not there)."""
    key = f.metadata["key"]
    return None if key is None else key.format(section=cls.SECTION, name=f.name)


def params_fields(cls) -> list[tuple[str, str, dataclasses.Field]]:
    """(option name, params key, field) of every setting of `cls` the params file holds,
    nested sections' too."""
    found = []
    for f in dataclasses.fields(cls):
        if "section" in f.metadata:
            sub = f.metadata["section"]
            found += [(f"{f.name}_{o}", k, g) for o, k, g in params_fields(sub)]
        elif "help" in f.metadata and (key := params_key(cls, f)) is not None:
            found.append((f.name, key, f))
    return found


def params_decisions(cls, **context) -> list[tuple[str, str, bool]]:
    """(option name, params key, decides) of every setting of `cls` in the params file that
    applies in this context (see `decides`): what each pipeline job passes (run-only ones
    too) and is rerun for (the deciding ones)."""
    found = []
    for f in dataclasses.fields(cls):
        if "section" in f.metadata:
            if decides(f, **context):
                sub = params_decisions(f.metadata["section"], **context)
                found += [(f"{f.name}_{o}", k, d) for o, k, d in sub]
        elif "help" in f.metadata and (key := params_key(cls, f)) is not None:
            role = decides(f, **context)
            if role is not None:
                found.append((f.name, key, role))
    return found


def click_options(cls):
    """A decorator adding one option per field of `cls` (--batch-size, --type2-norm). Every
    option defaults to None: the dataclass's default applies where neither the command line
    nor `--run-params` gives a value."""
    import click

    def decorate(command):
        for name, f in reversed(cli_fields(cls)):
            kind = {"int": int, "float": float}.get(str(f.type), str)
            choices = _choices(f)
            help = f.metadata["help"] + (f" ({', '.join(choices)})" if choices else "")
            if f.default is not None:
                help += f"  [default: {f.default}]"
            command = click.option(f"--{name.replace('_', '-')}", name, type=kind, help=help)(
                command
            )
        return command

    return decorate


def from_options(cls, options: dict, run_params: dict | None = None):
    """`cls` from a command's keyword options (<section>_<name> for a nested section's), the
    run-only settings it was not given taken from `run_params` (a params file's contents: how
    DVC's stages, whose commands hold only what decides, pass them), the rest defaults."""
    options = {k: v for k, v in options.items() if v is not None}
    for name, key, f in params_fields(cls):
        if name not in options and f.metadata["decides"] is False:
            value = _lookup(run_params or {}, key)
            if value is not None:
                options[name] = value
    nested = {}
    for f in dataclasses.fields(cls):
        if "section" in f.metadata:
            mine = {k.removeprefix(f"{f.name}_"): options.pop(k) for k in list(options)
                    if k.startswith(f"{f.name}_")}  # fmt: skip
            if mine:
                nested[f.name] = f.metadata["section"](**mine)
    config = cls(**options, **nested)
    config.validate()
    return config


def _lookup(params: dict, key: str):
    node = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def field_schema(f: dataclasses.Field) -> dict:
    """The JSON Schema of one field, with the same bounds as `check_field`."""
    meta = f.metadata
    if f.type == "str":
        choices = _choices(f)
        return {"enum": list(choices), "description": meta["help"]} if choices else {
            "type": "string", "description": meta["help"]}  # fmt: skip
    schema = {"type": "integer" if f.type == "int" else "number", "description": meta["help"]}
    for end, word in (("low", "inimum"), ("high", "aximum")):
        if meta.get(end) is not None:
            prefix = "exclusiveM" if meta[f"{end}_open"] else "m"
            schema[prefix + word] = meta[end]
    return {**schema, **getattr(meta["check"], "schema", {})}


def section_schema(cls) -> dict:
    """The params file's section for `cls`: every field whose key lies in it, nothing else;
    those without a default are required (a missing one takes the dataclass's default)."""
    params, properties = [], {}
    for f in dataclasses.fields(cls):
        if "section" in f.metadata:
            properties[f.name] = section_schema(f.metadata["section"])
        elif "help" in f.metadata and params_key(cls, f) == f"{cls.SECTION}.{f.name}":
            params.append(f)
            properties[f.name] = field_schema(f)
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [f.name for f in params if f.default is None],
        "properties": properties,
    }


def config_defaults(cls) -> dict:
    """{name: default} of the fields that have one (a setting a run was made before counts as
    its default)."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not None}


def field_of(cls, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(cls) if f.name == name)


# --- checks of values read back from files (a certify sidecar's keys) -----------------------
# Each returns None where the value passes, else what is wrong with it ("is not an integer"),
# for the reader to name the file and key. A key that is a setting takes its type and range
# from the setting's field (`declared`): one declaration for the option and the file.


def integer_check(low: int, high: int, none: bool = False):
    def check(value):
        if value is None and none:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            return "is not an integer"
        return None if low <= value <= high else f"is not between {low} and {high}"

    return check


def number_check(
    low: float, high: float, none: bool = False, low_open: bool = False, high_open: bool = False
):
    def check(value):
        if value is None and none:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "is not a number"
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (math.isfinite(value) and above and below):
            return (
                f"is not in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            )
        return None

    return check


def text_check(value):
    return None if isinstance(value, str) else "is not a string"


def numbers_check(kind, increasing: bool = True):
    """None, or a list of `kind` numbers (finite, non-negative, increasing): looks, radii."""

    def check(value):
        if value is None:
            return None
        ok = isinstance(value, list) and all(
            isinstance(v, kind) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
            for v in value
        )
        if not ok or (increasing and value != sorted(set(value))):
            return f"is not a list of increasing non-negative {kind.__name__}s"
        return None

    return check


def declared(cls, name: str, none: bool = False):
    """The reader's check of setting `name` of `cls`: the type and range its field declares
    (`none`: also null, where a mode does not take it)."""
    f = field_of(cls, name)
    meta = f.metadata
    if f.type == "str":
        return text_check
    if f.type == "int":
        return integer_check(meta["low"], meta["high"], none)
    return number_check(meta["low"], meta["high"], none=none, low_open=meta["low_open"],
                        high_open=meta["high_open"])  # fmt: skip
