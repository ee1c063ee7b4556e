"""Environment-driven iterables: the train dataloaders of lightning_pg (the only code that steps envs)."""
from lightning_pg.data.base import EnvIterable
from lightning_pg.data.episodes import EpisodeIterable
from lightning_pg.data.replay import ReplayBuffer, ReplayIterable

__all__ = ["EnvIterable", "EpisodeIterable", "ReplayBuffer", "ReplayIterable"]
