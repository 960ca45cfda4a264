# Released checkpoints (params `models:`) take the place of training: `l1cert import` converts
# each into results/models/<dataset>/<name>/model.pt, which certify reads like a trained one.


rule import_model:
    input:
        lambda wildcards: IMPORTED[wildcards.imported]["path"],
        code("import"),
    output:
        model=f"{IMPORTED_DIR}/model.pt",
    log:
        LOGS["import"].format(dataset="{dataset}", model="{imported}"),
    conda:
        "../envs/l1cert.yaml"
    params:
        decides=lambda w: IMPORTED[w.imported],
        # the entry as options (--name ... --path ...), the spelling DVC's ${item} writes
        cmd=lambda w, output: pipeline.import_command(
            SOURCE, pipeline.entry_options(IMPORTED[w.imported]), w.dataset, output.model
        ),
    shell:
        "{params.cmd} > {log} 2>&1"
