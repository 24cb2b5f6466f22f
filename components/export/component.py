from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from musictext_kfp.images import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def export(
    family: str,
    profile: str,
    model: Input[Model],
    evaluation: Input[Dataset],
    exported: Output[Model],
    clips_index: Optional[Input[Dataset]] = None,
):
    """Write what Navidrome's text service loads: checkpoints/{name}_best_r1.pt, the HF folder
    with model.onnx and the model card; the card lists the data sources and their licences from
    the run's clips index when it is given."""
    from musictext import storage
    from musictext.config import load_family_config
    from musictext.export.navidrome import export_family
    from musictext.logs import setup_logging

    setup_logging()
    cfg = load_family_config(family, profile)
    metrics = storage.read_json(storage.join(evaluation.path, "metrics.json"))
    index_dir = clips_index.path if clips_index is not None else None
    exported.metadata.update(export_family(model.path, metrics, exported.path, cfg, clips_index=index_dir))
