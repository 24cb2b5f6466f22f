"""Thin KFP components, one folder each; every body imports the musictext library.

All components are lightweight Python components whose ``base_image`` is the project's own image
(the package is preinstalled there), so the same definitions run on a cluster and, through
``kfp.local.SubprocessRunner``, on a laptop with the package installed.
"""
