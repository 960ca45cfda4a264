# One base classifier per noise x training x sigma. `l1cert train` resumes a run cut short
# from checkpoint-last.pt in its out dir (no declared output, so neither Snakemake nor DVC
# deletes it) and removes that checkpoint once model.pt is written.


rule train:
    input:
        MANIFEST,
        code("train"),
    output:
        model=f"{TRAINED_DIR}/model.pt",
        log=f"{TRAINED_DIR}/train-log.csv",
        metrics=f"{TRAINED_DIR}/metrics.json",
    log:
        LOGS["train"].format(dataset="{dataset}", model="{noise}-{training}-s{sigma}"),
    benchmark:
        JOB_RECORD.format(stage="train", dataset="{dataset}", job="{noise}-{training}-s{sigma}")
    conda:
        "../envs/l1cert.yaml"
    threads: config["resources"]["train"]["threads"]
    resources:
        gpu=config["resources"]["train"]["gpu"],
        runtime=config["resources"]["train"]["runtime"],
        mem_mb=config["resources"]["train"]["mem_mb"],
    params:
        decides=decides("train"),
        cmd=lambda w, output: pipeline.train_command(
            SOURCE, w.noise, w.sigma, w.training, str(Path(output.model).parent)
        ),
    shell:
        "{params.cmd} > {log} 2>&1"
