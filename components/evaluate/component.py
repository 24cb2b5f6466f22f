from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from musictext_kfp.images import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(
    family: str,
    model: Input[Model],
    text: Input[Dataset],
    targets: Input[Dataset],
    evaluation: Output[Dataset],
    metrics: Output[Metrics],
    summary: Output[Markdown],
    clips_index: Optional[Input[Dataset]] = None,  # noqa: UP045 (kfp reads typing.Optional)
):
    """Held-out retrieval both ways (every caption a query; R@1/5/10, MRR, mAP@10, median rank,
    pessimistic ties, each with chance), the cosine between predicted and target vectors per
    enrichment block, cosine histograms and t-SNE/UMAP maps; with ``clips_index`` (the clips'
    tags) zero-shot tagging too. ``evaluation``: metrics.json + plots + report.html + summary.md;
    ``metrics``: the headline numbers for the KFP UI; ``summary``: the Markdown summary."""
    from musictext import storage
    from musictext.evaluate.core import SUMMARY_MD, headline
    from musictext.evaluate.retrieval import evaluate as run_eval
    from musictext.logs import setup_logging
    from musictext_kfp.evaluate_cli import source_facets

    setup_logging()
    result = run_eval(model.path, text.path, targets.path, evaluation.path, split="test", family=family,
                      clips_index_dir=clips_index.path if clips_index is not None else None,
                      facets=source_facets())
    # Scalars for the KFP UI's metrics view, comparable across runs: "<family>/<name>".
    for name, value in headline(result).items():
        metrics.log_metric(f"{family}/{name}", value)
    with open(summary.path, "w", encoding="utf-8") as fh:
        fh.write(storage.read_bytes(storage.join(evaluation.path, SUMMARY_MD)).decode())
