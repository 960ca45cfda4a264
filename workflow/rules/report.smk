# Tables, figures, plot data and metrics from the merged certificates; the figures and tables
# carry the captions `l1cert report` writes, for `snakemake --report report.html`.

rule report:
    input:
        every_model(f"{CERTIFY}.tsv"),
    output:
        [in_report(path) for path in REPORT],
    log:
        "logs/report.log",
    params:
        radii=config["report"]["radii"],
    conda:
        "../envs/l1cert.yaml"
    shell:
        "l1cert report {input} --out-dir results --radii {params.radii}"
        " --metrics results/metrics.json > {log} 2>&1"
