# Certification, scattered over shards and merged.
#
# A shard is certified into partial/ and moved onto its declared outputs only once complete.
# Snakemake and DVC delete a job's declared outputs before running it, so a shard cut short
# (failure, preemption, Ctrl-C) keeps its rows in partial/, where the rerun of
# `l1cert certify` resumes them. Were the certify params or the model changed in between,
# certify refuses that partial file with a message saying so: delete it to start afresh.


rule certify:
    input:
        MANIFEST,
        model=f"{MODEL_DIR}/model.pt",
    output:
        tsv=f"{CERTIFY}/shard-{{scatteritem}}.tsv",
        json=f"{CERTIFY}/shard-{{scatteritem}}.json",
    log:
        "logs/certify/{dataset}/{noise}-{training}-s{sigma}/shard-{scatteritem}.log",
    params:
        partial=f"{CERTIFY}/partial/shard-{{scatteritem}}",
        shard=lambda wildcards: wildcards.scatteritem.replace("-of-", "/"),
        data=data_options,
        certify=config["certify"],
    threads: config["resources"]["certify"]["threads"]
    resources:
        gpu=config["resources"]["certify"]["gpu"],
        runtime=config["resources"]["certify"]["runtime"],
        mem_mb=config["resources"]["certify"]["mem_mb"],
    conda:
        "../envs/l1cert.yaml"
    shell:
        "(l1cert certify --model {input.model} --split {params.certify[split]} {params.data}"
        " --n0 {params.certify[n0]} --n {params.certify[n]} --alpha {params.certify[alpha]}"
        " --batch {params.certify[batch]} --seed {params.certify[seed]} --shard {params.shard}"
        " --skip {params.certify[skip]} --max {params.certify[max]} --device auto"
        " --threads {threads} --out {params.partial}.tsv"
        " && mv {params.partial}.json {output.json} && mv {params.partial}.tsv {output.tsv})"
        " > {log} 2>&1"


rule merge:
    input:
        gather.certify(f"{CERTIFY}/shard-{{scatteritem}}.tsv", allow_missing=True),
    output:
        tsv=f"{CERTIFY}.tsv",
        json=f"{CERTIFY}.json",
    log:
        "logs/merge/{dataset}/{noise}-{training}-s{sigma}.log",
    conda:
        "../envs/l1cert.yaml"
    shell:
        "l1cert merge {input} --out {output.tsv} > {log} 2>&1"
