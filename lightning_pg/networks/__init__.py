"""Networks: encoders (MLP, CNN), action distributions, policy and value heads, actors and Q critics."""
from lightning_pg.networks.actor_critic import ActorCritic
from lightning_pg.networks.actors import DeterministicActor, TanhGaussianActor
from lightning_pg.networks.critics import QCritics
from lightning_pg.networks.distributions import Categorical, DiagGaussian, TanhGaussian
from lightning_pg.networks.encoders import MLP, NatureCNN, make_encoder
from lightning_pg.networks.normalize import RunningMeanStd
from lightning_pg.networks.targets import frozen_copy, no_weight_grads, polyak_update

__all__ = [
    "ActorCritic", "Categorical", "DeterministicActor", "DiagGaussian", "MLP", "NatureCNN", "QCritics",
    "RunningMeanStd", "TanhGaussian", "TanhGaussianActor", "frozen_copy", "make_encoder", "no_weight_grads",
    "polyak_update",
]
