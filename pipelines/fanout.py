"""How wide the download fan-out of the pipeline may be.

Free of kfp: the pipeline and its tests import it; the listing itself (musictext.ingest.plan) cuts the shards.

Each shard is one ParallelFor iteration of download, clip and audio-embedding tasks, and KFP's
backend holds every iteration's nodes in one Argo workflow object; very wide loops stall it
(kubeflow/pipelines#12131). docs/fanout.md has the numbers and the choice.
"""

# Iterations of the shard loop at most (each runs 3 tasks): KFP handles low thousands. The
# listing (musictext.ingest.plan.plan, max_shards) cuts larger shards to stay within it.
MAX_FANOUT = 1000
