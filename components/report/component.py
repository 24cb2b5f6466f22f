from typing import List

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Model, Output

from musictext_kfp.images import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def report(
    evaluations: Input[List[Dataset]],
    exports: Input[List[Model]],
    targets: Input[List[Dataset]],
    texts: Input[List[Dataset]],
    clips_index: Input[Dataset],
    run: Output[Dataset],
    html: Output[HTML],
):
    """Gather the run: metrics.json, report.html, checkpoints/ and every stage's rejected items."""
    from musictext.logs import setup_logging
    from musictext.report.assemble import assemble_run

    setup_logging()
    summary = assemble_run(
        evaluation_dirs=[e.path for e in evaluations],
        export_dirs=[e.path for e in exports],
        stage_dirs=[a.path for a in [*targets, *texts]],
        clips_index_dir=clips_index.path,
        out_dir=run.path,
        html_path=html.path,
    )
    run.metadata.update(summary)
