"""The params file's schema: the hand-written sections (workflow/schemas/params.schema.yaml)
with the stages' sections generated from `l1cert.config`'s dataclasses and the names from their
registries, and `--config` values coerced to what it wants. Torch-free: Snakemake validates its
config with it before building the DAG.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from l1cert.config import CertifyConfig, DataConfig, ReportConfig, TrainConfig
from l1cert.fields import field_of, field_schema, section_schema


def params_schema(base: str | Path) -> dict:
    """The params schema: `base` with `data:`, `train:`, `certify:` and `report:` generated from
    DataConfig, TrainConfig, CertifyConfig and ReportConfig, the threads of `resources:` from
    their fields, and the names (datasets, noises, trainings) from their registries. certify
    also holds the pipeline's shard list, and sequential sampling needs n to reach its first
    round."""
    import yaml

    from l1cert.names import DATASETS, TRAININGS
    from l1cert.noise import NOISES
    from l1cert.sampling import takes_radii
    from l1cert.sequential import FIRST_LOOK

    schema = yaml.safe_load(Path(base).read_text())
    top, sweep = schema["properties"], schema["properties"]["sweep"]["properties"]
    model = top["models"]["items"]["properties"]
    top["dataset"]["enum"] = list(DATASETS)
    sweep["noises"]["items"]["enum"] = list(NOISES)
    # an imported checkpoint is certified by Monte Carlo (an exact noise needs its template)
    model["noise"]["enum"] = [n for n, cls in NOISES.items() if not cls.exact]
    sweep["trainings"]["items"]["enum"] = model["training"]["enum"] = list(TRAININGS)
    sigma = field_schema(field_of(TrainConfig, "sigma"))
    sweep["sigmas"]["items"] = {**sigma, "description": sweep["sigmas"]["description"]}
    model["sigma"] = sigma
    schema["$defs"]["job"]["properties"]["threads"] = field_schema(field_of(TrainConfig, "threads"))
    top["data"] = section_schema(DataConfig)
    top["report"] = section_schema(ReportConfig)
    top["train"] = section_schema(TrainConfig)
    certify = section_schema(CertifyConfig)
    certify["properties"]["shards"] = schema["$defs"]["shards"]
    certify["required"].append("shards")  # both engines iterate over it
    certify["if"] = {"properties": {"sampling": {"enum": takes_radii()}}}  # n is their cap
    certify["then"] = {"properties": {"n": {"minimum": FIRST_LOOK}}}
    top["certify"] = certify
    return schema


def check_params(config: dict, machine: bool = True) -> None:
    """Refuse, naming its key, what a job would refuse later: every setting of the stages'
    sections by its field's checks (`machine`: also against this machine's CPUs; a cluster's
    jobs run elsewhere), the shard list, and each σ of the sweep for each of its noises."""
    from l1cert.fields import check_field, params_fields
    from l1cert.names import INPUT_GRID
    from l1cert.noise import noise_class
    from l1cert.pipeline import lookup
    from l1cert.utils import L1CertError

    for cls in (DataConfig, TrainConfig, CertifyConfig, ReportConfig):
        for _, key, f in params_fields(cls):
            try:
                value = lookup(config, key)
            except KeyError:
                continue  # not given: its default applies
            try:
                check_field(f, value, machine=machine)
            except L1CertError as err:
                raise L1CertError(f"{key}: {err}") from None
    shards = config["certify"]["shards"]
    if sorted(shards) != list(range(1, len(shards) + 1)):
        raise L1CertError(
            f"certify.shards must list the shard numbers 1..K once each, not {shards}"
        )
    grid = INPUT_GRID[config["dataset"]]
    for noise in config["sweep"]["noises"]:
        for sigma in config["sweep"]["sigmas"]:
            try:
                noise_class(noise).check_sigma(sigma, grid)
            except L1CertError as err:
                raise L1CertError(f"sweep.sigmas: {noise} noise: {err}") from None


def coerce_numbers(node, schema: dict, root: dict | None = None):
    """`node` with the strings that the schema wants as numbers converted (Snakemake's
    `--config 'sweep={"sigmas":[0.5,0.75]}'` passes them as strings), following the schema's
    `$ref`s; anything else as is, for the schema to judge."""
    root = schema if root is None else root
    while "$ref" in schema:  # "#/$defs/job"
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    kind = schema.get("type")
    if isinstance(node, dict) and kind == "object":
        properties = schema.get("properties", {})
        return {k: coerce_numbers(v, properties.get(k, {}), root) for k, v in node.items()}
    if isinstance(node, list) and kind == "array":
        return [coerce_numbers(v, schema.get("items", {}), root) for v in node]
    if isinstance(node, str) and kind in ("number", "integer"):
        try:
            return int(node) if kind == "integer" else float(node)
        except ValueError:
            return node
    return node


@functools.cache
def params_schema_file(base: str | Path) -> str:
    """`params_schema(base)` written to a YAML file in the temporary folder (Snakemake's
    `validate` takes a path); its absolute path. Named by its content's digest, so every
    planning of the same schema reuses one file instead of leaving a new one each time."""
    import hashlib

    import yaml

    from l1cert.utils import atomic_write_text

    text = yaml.safe_dump(params_schema(base), sort_keys=False, allow_unicode=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"l1cert-params-schema-{digest}.yaml"
    if not (path.is_file() and path.read_text() == text):
        atomic_write_text(path, text)
    return str(path.resolve())
