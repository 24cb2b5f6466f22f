"""musictext's Kubeflow layer: the DAG, its compiler, the local runner and the `musictext` CLI.

Installed as the ``musictext_kfp`` package (this folder), with the components (``components/``)
as ``musictext_kfp.components``. The library, ``musictext``, never imports this layer.
"""
