# The dataset: downloaded (cifar10), found on disk (imagenet, imagefolder) or built in (digits);
# the manifest records what was found, so every later rule starts from a checked dataset.


rule data:
    output:
        MANIFEST,
    log:
        "logs/data/{dataset}.log",
    params:
        data=data_options,
    conda:
        "../envs/l1cert.yaml"
    shell:
        "l1cert data --dataset {wildcards.dataset} {params.data} --manifest {output} > {log} 2>&1"
