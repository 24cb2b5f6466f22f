"""Training pairs: (one caption's tokens, the clip's audio target), a new caption per epoch."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from musictext.pairs import SplitData


class CaptionPairs(Dataset):
    """Item i = (one caption of clip i, target of clip i).

    The caption is drawn per (seed, epoch, clip), so every epoch sees each clip exactly once
    with a varying caption, and all ranks agree without communicating.
    """

    def __init__(self, data: SplitData, seed: int = 0):
        self.data = data
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[list[int], np.ndarray]:
        options = self.data.token_ids[i]
        pick = np.random.default_rng((self.seed, self.epoch, i)).integers(len(options))
        return options[pick], self.data.targets[i]


def first_caption_pairs(data: SplitData) -> list[tuple[list[int], np.ndarray]]:
    """Deterministic evaluation pairs: each clip's first caption."""
    return [(toks[0], data.targets[i]) for i, toks in enumerate(data.token_ids)]


def collate(pad_id: int):
    def _collate(items: list[tuple[list[int], np.ndarray]]) -> dict[str, torch.Tensor]:
        longest = max(len(t) for t, _ in items)
        ids = torch.full((len(items), longest), pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), longest), dtype=torch.long)
        for row, (toks, _) in enumerate(items):
            ids[row, : len(toks)] = torch.tensor(toks, dtype=torch.long)
            mask[row, : len(toks)] = 1
        target = torch.from_numpy(np.stack([t for _, t in items])).float()
        return {"input_ids": ids, "attention_mask": mask, "target": target}

    return _collate
