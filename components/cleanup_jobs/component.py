from kfp import dsl

from musictext_kfp.images import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def cleanup_jobs(run_id: str, launcher: str, train_options: dict) -> list:
    """The exit task of a cluster run: delete every training job (TrainJob/PyTorchJob) labelled
    with this run's id, whether the run succeeded, failed or was cancelled; the names deleted.

    A run whose training ran in its own task (launcher `local`) has no jobs: nothing to do. A
    cleanup that cannot reach the cluster logs why and leaves the run's result as it was.

    Args:
        run_id: The KFP run id the training jobs are labelled with.
        launcher: The run's train_launcher.
        train_options: The run's train_options (their namespace, when set, holds the jobs).
    """
    import logging

    from musictext.logs import setup_logging
    from musictext.train.launch import delete_run_jobs

    setup_logging()
    log = logging.getLogger("musictext.cleanup")
    if launcher == "local":
        log.info("launcher 'local' trains inside its task: no cluster jobs to delete for run %s", run_id)
        return []
    namespace = train_options.get("namespace") or None
    try:
        deleted = delete_run_jobs(run_id, namespace=namespace)
    except Exception as err:  # an exit task must not turn a finished run into a failed one
        log.error("could not delete the training jobs of run %s in namespace %s: %s: %s",
                  run_id, namespace or "(own)", type(err).__name__, err)
        return []
    log.info("deleted %d training job(s) of run %s: %s", len(deleted), run_id, ", ".join(deleted) or "none")
    return deleted
