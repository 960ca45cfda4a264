# Released checkpoints (params `models:`) take the place of training: `l1cert import` converts
# each into results/models/<dataset>/<name>/model.pt, which certify reads like a trained one.


rule import_model:
    input:
        lambda wildcards: IMPORTED[wildcards.imported]["path"],
    output:
        model=f"{IMPORTED_DIR}/model.pt",
    log:
        "logs/import/{dataset}/{imported}.log",
    params:
        # the entry as options (--name ... --path ...), the spelling DVC's ${item} writes
        entry=lambda wildcards: cli_options(IMPORTED[wildcards.imported]),
    conda:
        "../envs/l1cert.yaml"
    shell:
        "l1cert import {params.entry} --dataset {wildcards.dataset} --out {output.model:q}"
        " > {log} 2>&1"
