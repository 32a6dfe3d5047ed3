"""Segmentation networks behind one adapter API (``train`` / ``predict``); smp is imported only here.

``segmenters.registry`` holds the architectures (``deeplabv3plus`` from ``segmenters.deeplab``, which
wraps segmentation_models_pytorch's DeepLabV3+), ``segmenters.protocol`` the named training protocols
and ``segmenters.train`` the training loop (DDP through :mod:`taskeval.distributed`).
"""
