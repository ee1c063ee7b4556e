"""Environment-driven iterables: the train dataloaders of lightning_pg (the only code that steps envs)."""
from lightning_pg.data.base import EnvIterable
from lightning_pg.data.episodes import EpisodeIterable

__all__ = ["EnvIterable", "EpisodeIterable"]
