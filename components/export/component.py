from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from musictext_kfp.images import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def export(
    family: str, profile: str, model: Input[Model], evaluation: Input[Dataset], exported: Output[Model]
):
    """Write what Navidrome's text service loads: checkpoints/{name}_best_r1.pt (+ HF folder)."""
    from musictext import storage
    from musictext.config import load_family_config
    from musictext.export.navidrome import export_family
    from musictext.logs import setup_logging

    setup_logging()
    cfg = load_family_config(family, profile)
    metrics = storage.read_json(storage.join(evaluation.path, "metrics.json"))
    exported.metadata.update(export_family(model.path, metrics, exported.path, cfg))
