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
# in the HTML report. Seconds are wall time with the jobs side by side: compare within a run.


rule job_costs:
    input:
        train=expand(JOB_RECORD, stage="train", dataset=DATASET, job=TRAINED),
        certify=expand(
            JOB_RECORD,
            stage="certify",
            dataset=DATASET,
            job=[f"{m}/shard-{k}-of-{len(SHARDS)}" for m in MODELS for k in SHARDS],
        ),
    output:
        report(JOB_COSTS, caption="../report/job-costs.rst", category="cost"),
    run:
        experiment.job_costs([*input.train, *input.certify], output[0])
