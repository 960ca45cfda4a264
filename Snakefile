# l1cert: train smoothed classifiers, certify their l1 robustness, report certified accuracy.
#   snakemake --profile workflow/profiles/default                  the default experiment
#   snakemake --profile workflow/profiles/slurm --configfile config/paper-cifar10.yaml
# Parameters: params.yaml (also DVC's params), overridden by --configfile; rules: workflow/rules.

from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/import.smk"
include: "workflow/rules/certify.smk"
include: "workflow/rules/report.smk"


# The HTML report's landing page (snakemake --report): what the results it reports are, from
# their files, and a warning where the current config would make them otherwise.
report: experiment.describe(config, ".snakemake/l1cert/workflow.rst")


# On a cluster these run where snakemake runs: the CIFAR-10 download needs the internet,
# which compute nodes often lack; import, merge and report take seconds.
localrules:
    data,
    import_model,
    merge,
    report,
    job_costs,


rule all:
    default_target: True
    input:
        rules.report.output,
        rules.job_costs.output,
