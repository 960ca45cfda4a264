# The dataset: downloaded (cifar10), found on disk (imagenet, imagefolder) or built in (digits);
# the manifest records what was found, so every later rule starts from a checked dataset.


rule data:
    input:
        code("data"),
    output:
        MANIFEST,
    log:
        LOGS["data"],
    conda:
        "../envs/l1cert.yaml"
    params:
        decides=decides("data"),
        cmd=lambda wildcards, output: pipeline.data_command(SOURCE, output[0]),
    shell:
        "{params.cmd} > {log} 2>&1"
