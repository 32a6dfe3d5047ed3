"""The dataset layer: cards, readers for each on-disk layout, validation and the synthetic benchmark."""

from taskeval.data.card import DatasetCard, builtin_cards, load_card
from taskeval.data.dataset import PairedDataset, Sample, collate_samples

__all__ = ["DatasetCard", "PairedDataset", "Sample", "builtin_cards", "collate_samples", "load_card"]
