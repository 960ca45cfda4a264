# Certification, scattered over shards and merged.
#
# `l1cert certify` grows a shard's rows in partial/ beside its outputs and moves them onto
# the outputs only once complete: Snakemake and DVC delete a job's declared outputs before
# running it, so a shard cut short (failure, preemption, Ctrl-C) resumes from partial/ on the
# rerun. Were the certify params, the model or the code changed in between, certify refuses
# that partial file with a message saying so.


rule certify:
    input:
        MANIFEST,
        model=f"{MODEL_DIR}/model.pt",
    output:
        tsv=f"{CERTIFY}/shard-{{scatteritem}}.tsv",
        json=f"{CERTIFY}/shard-{{scatteritem}}.json",
    log:
        "logs/certify/{dataset}/{model}/shard-{scatteritem}.log",
    params:
        shard=lambda wildcards: wildcards.scatteritem.replace("-of-", "/"),
        data=data_options,
        certify=certify_options,
    threads: config["resources"]["certify"]["threads"]
    resources:
        gpu=config["resources"]["certify"]["gpu"],
        runtime=config["resources"]["certify"]["runtime"],
        mem_mb=config["resources"]["certify"]["mem_mb"],
    conda:
        "../envs/l1cert.yaml"
    shell:
        "l1cert certify --model {input.model:q} {params.certify} {params.data}"
        " --shard {params.shard} --device auto --threads {threads} --out {output.tsv:q}"
        " > {log} 2>&1"


rule merge:
    input:
        gather.certify(f"{CERTIFY}/shard-{{scatteritem}}.tsv", allow_missing=True),
    output:
        tsv=f"{CERTIFY}.tsv",
        json=f"{CERTIFY}.json",
    log:
        "logs/merge/{dataset}/{model}.log",
    conda:
        "../envs/l1cert.yaml"
    shell:
        "l1cert merge {input:q} --out {output.tsv:q} > {log} 2>&1"
