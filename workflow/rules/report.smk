# Tables, figures, plot data and metrics from the merged certificates; the figures and tables
# carry the captions `l1cert report` writes, for `snakemake --report report.html`.


rule report:
    input:
        code("report"),
        merged=every_model(f"{CERTIFY}.tsv"),
    output:
        [in_report(path) for path in REPORT],
    log:
        LOGS["report"],
    conda:
        "../envs/l1cert.yaml"
    params:
        decides=decides("report"),
        cmd=lambda w, input: pipeline.report_command(
            SOURCE, " ".join(map(shlex.quote, input.merged)), "results", "results/metrics.json"
        ),
    shell:
        "{params.cmd} > {log} 2>&1"


# What each train and certify job cost as Snakemake measured it (its benchmark files), one table
# in the HTML report, made once every model is certified. It reads the records there are rather
# than asking for them: a clone whose results came through `dvc pull` has none, and must not
# retrain to make them.


rule job_costs:
    input:
        every_model(f"{CERTIFY}.tsv"),
    output:
        report(JOB_COSTS, caption="../report/job-costs.rst", category="cost"),
    log:
        LOGS["job_costs"],
    run:
        experiment.job_costs(experiment.job_records(), output[0], log[0])
