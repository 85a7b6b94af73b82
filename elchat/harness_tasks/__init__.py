"""lm-evaluation-harness task templates of the kit (YAML + the metric functions they name).

`elchat.evaluation.harness` writes, per run, small task YAMLs that `include:` these templates and
point `dataset_kwargs.data_files` at JSONL items it built from the shipped data (or from FLORES-200
and XL-Sum on the hub), so lm-eval scores exactly the items the kit's own scorers see.
"""
