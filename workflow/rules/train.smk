# One base classifier per noise x training x sigma. A run cut short resumes from
# checkpoint-last.pt in its out dir: no declared output, so neither Snakemake nor DVC
# deletes it before the rerun. A finished run removes it, so changed params start afresh.


rule train:
    input:
        MANIFEST,
    output:
        model=f"{MODEL_DIR}/model.pt",
        log=f"{MODEL_DIR}/train-log.csv",
        metrics=f"{MODEL_DIR}/metrics.json",
    log:
        "logs/train/{dataset}/{noise}-{training}-s{sigma}.log",
    params:
        out=MODEL_DIR,
        data=data_options,
        train=config["train"],
        type2=config["train"]["type2"],
    threads: config["resources"]["train"]["threads"]
    resources:
        gpu=config["resources"]["train"]["gpu"],
        runtime=config["resources"]["train"]["runtime"],
        mem_mb=config["resources"]["train"]["mem_mb"],
    conda:
        "../envs/l1cert.yaml"
    shell:
        "l1cert train --dataset {wildcards.dataset} --arch {params.train[arch]}"
        " --noise {wildcards.noise} --sigma {wildcards.sigma} --training {wildcards.training}"
        " --epochs {params.train[epochs]} --batch-size {params.train[batch_size]}"
        " --lr {params.train[lr]} --lr-step {params.train[lr_step]}"
        " --lr-gamma {params.train[lr_gamma]} --momentum {params.train[momentum]}"
        " --weight-decay {params.train[weight_decay]} --seed {params.train[seed]}"
        " --type2-norm {params.type2[norm]} --type2-epsilon {params.type2[epsilon]}"
        " --type2-steps {params.type2[steps]} --type2-samples {params.type2[samples]}"
        " --type2-warmup-epochs {params.type2[warmup_epochs]}"
        " {params.data} --workers {params.train[workers]} --device auto --threads {threads}"
        " --out {params.out} > {log} 2>&1 && rm -f {params.out}/checkpoint-last.pt"
