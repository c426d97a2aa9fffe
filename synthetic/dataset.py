"""Seeded synthetic datasets for the training scripts, sharded by DDP rank (design.md, "Scale").

Item ``i`` of a dataset is the scene/concert with seed ``base_seed + i``, so every rank and every
run sees the same data without storing any, and a held-out split is just another ``base_seed``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Generic, TypeVar

from .concert import Concert, ConcertConfig, make_concert
from .scene import Scene, SceneConfig, make_scene

Item = TypeVar("Item")


def shard_indices(length: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """Indices of ``range(length)`` owned by ``rank`` (round-robin; ranks differ by at most one)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of size {world_size}")
    return list(range(rank, length, world_size))


@dataclass
class SeededDataset(Generic[Item]):
    """``length`` items made by ``make(replace(config, seed=base_seed + i))`` (map-style dataset)."""

    config: object
    length: int
    base_seed: int
    make: Callable[[object], Item]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Item:
        if not -self.length <= index < self.length:
            raise IndexError(index)
        return self.make(replace(self.config, seed=self.base_seed + index % self.length))

    def shard(self, rank: int, world_size: int) -> list[int]:
        return shard_indices(self.length, rank, world_size)


def scene_dataset(length: int, base_seed: int = 0, config: SceneConfig | None = None) -> SeededDataset[Scene]:
    return SeededDataset(config or SceneConfig(), length, base_seed, make_scene)


def concert_dataset(length: int, base_seed: int = 0, config: ConcertConfig | None = None) -> SeededDataset[Concert]:
    return SeededDataset(config or ConcertConfig(), length, base_seed, make_concert)
