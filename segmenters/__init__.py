"""Segmentation networks behind one adapter API (``train`` / ``predict``); smp is imported only here.

``segmenters.deeplab`` wraps segmentation_models_pytorch's DeepLabV3+, ``segmenters.protocol`` holds the
named training protocols, ``segmenters.train`` the training loop and ``segmenters.distributed`` the
torchrun/DDP helpers.
"""
