"""Launchers: where the runner's cells run. ``slurm`` submits them as a SLURM job array via submitit.

The local launcher is the runner itself (``taskeval benchmark`` without ``--launcher``); ``--shard i/n``
serves other schedulers; ``jobs: N`` (``--jobs N``) splits a local CPU run into N single-shard processes
(``taskeval.launchers.local_jobs``). See ``taskeval.launchers.slurm`` for the cluster launcher and its settings.
"""
