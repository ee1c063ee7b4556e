"""Networks: MLP bodies and encoders, the on-policy actor-critic and its distributions, off-policy actors and
Q critics, target-network helpers, running statistics."""
from lightning_pg.networks.actor_critic import (ActorCritic, Bernoulli, Categorical, DiagGaussian, MultiCategorical,
                                                StackedMLP)
from lightning_pg.networks.actors import DeterministicActor, TanhGaussian, TanhGaussianActor
from lightning_pg.networks.critics import QCritics
from lightning_pg.networks.encoders import MLP, MultiInputEncoder, NatureCNN, make_encoder
from lightning_pg.networks.normalize import RunningMeanStd
from lightning_pg.networks.targets import frozen_copy, no_weight_grads, polyak_update

__all__ = [
    "ActorCritic", "Bernoulli", "Categorical", "DeterministicActor", "DiagGaussian", "MLP", "MultiCategorical", "MultiInputEncoder", "NatureCNN", "QCritics",
    "RunningMeanStd", "StackedMLP", "TanhGaussian", "TanhGaussianActor", "frozen_copy", "make_encoder",
    "no_weight_grads", "polyak_update",
]
