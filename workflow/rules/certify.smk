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
        code("certify"),
        model=f"{MODEL_DIR}/model.pt",
    output:
        tsv=f"{CERTIFY}/shard-{{scatteritem}}.tsv",
        json=f"{CERTIFY}/shard-{{scatteritem}}.json",
    log:
        LOGS["certify"].format(dataset="{dataset}", model="{model}", shard="{scatteritem}"),
    benchmark:
        JOB_RECORD.format(stage="certify", dataset="{dataset}", job="{model}/shard-{scatteritem}")
    conda:
        "../envs/l1cert.yaml"
    threads: config["resources"]["certify"]["threads"]
    resources:
        gpu=config["resources"]["certify"]["gpu"],
        runtime=config["resources"]["certify"]["runtime"],
        mem_mb=config["resources"]["certify"]["mem_mb"],
    params:
        decides=decides("certify"),
        cmd=lambda w, input, output: pipeline.certify_command(
            SOURCE, input.model, NOISE_OF[w.model], w.scatteritem.replace("-of-", "/"), output.tsv
        ),
    shell:
        "{params.cmd} > {log} 2>&1"


rule merge:
    input:
        code("merge"),
        shards=gather.certify(f"{CERTIFY}/shard-{{scatteritem}}.tsv", allow_missing=True),
    output:
        tsv=f"{CERTIFY}.tsv",
        json=f"{CERTIFY}.json",
    log:
        LOGS["merge"],
    conda:
        "../envs/l1cert.yaml"
    params:
        cmd=lambda w, input, output: pipeline.merge_command(
            SOURCE, " ".join(map(shlex.quote, input.shards)), output.tsv
        ),
    shell:
        "{params.cmd} > {log} 2>&1"
