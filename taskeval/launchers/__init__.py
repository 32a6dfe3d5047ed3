"""Launchers: where the runner's cells run. ``slurm`` submits them as a SLURM job array via submitit.

The local launcher is the runner itself (``taskeval benchmark`` without ``--launcher``); ``--shard i/n``
serves other schedulers. See ``taskeval.launchers.slurm`` for the cluster launcher and its settings.
"""
