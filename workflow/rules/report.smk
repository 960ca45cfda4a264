# Tables, figures, plot data and metrics from the merged certificates; the figures and tables
# carry the captions `l1cert report` writes, for `snakemake --report report.html`.


rule report:
    input:
        code("report"),
        merged=every_model(f"{CERTIFY}.tsv"),
    output:
        [in_report(path) for path in REPORT],
    log:
        "logs/report.log",
    conda:
        "../envs/l1cert.yaml"
    params:
        decides=decides("report"),
        cmd=lambda w, input: pipeline.report_command(
            SOURCE, " ".join(map(shlex.quote, input.merged)), "results", "results/metrics.json"
        ),
    shell:
        "{params.cmd} > {log} 2>&1"
