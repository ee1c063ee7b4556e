"""Networks: encoders (MLP, CNN), action distributions, policy and value heads."""
from lightning_pg.networks.actor_critic import ActorCritic
from lightning_pg.networks.distributions import Categorical, DiagGaussian
from lightning_pg.networks.encoders import MLP, NatureCNN, make_encoder
from lightning_pg.networks.normalize import RunningMeanStd

__all__ = ["ActorCritic", "Categorical", "DiagGaussian", "MLP", "NatureCNN", "RunningMeanStd", "make_encoder"]
