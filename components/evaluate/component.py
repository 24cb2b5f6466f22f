from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from musictext_kfp.images import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(
    family: str,
    model: Input[Model],
    text: Input[Dataset],
    targets: Input[Dataset],
    evaluation: Output[Dataset],
    metrics: Output[Metrics],
):
    """Held-out retrieval: text->audio and audio->text Recall@1/5/10 and MRR, with chance, and
    the cosine between predicted and target vectors per enrichment block (mean, robust, dmean)."""
    from musictext.evaluate.retrieval import evaluate as run_eval
    from musictext.logs import setup_logging

    setup_logging()
    result = run_eval(model.path, text.path, targets.path, evaluation.path, split="test")
    # Scalars for the KFP UI's metrics view.
    for direction in ("text_to_audio", "audio_to_text", "chance"):
        for name, value in result[direction].items():
            metrics.log_metric(f"{family}/{direction}/{name}", float(value))
    metrics.log_metric(f"{family}/n_test", float(result["n_test"]))
    for block, diag in result["blocks"].items():
        if diag["cosine"] is not None:  # undefined where the target block is all zero
            metrics.log_metric(f"{family}/block_cosine/{block}", float(diag["cosine"]))
