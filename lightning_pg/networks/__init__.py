"""Networks: encoders (MLP, CNN), action distributions, policy and value heads."""
from lightning_pg.networks.actor_critic import ActorCritic
from lightning_pg.networks.distributions import Categorical, DiagGaussian
from lightning_pg.networks.encoders import NatureCNN, make_encoder, mlp

__all__ = ["ActorCritic", "Categorical", "DiagGaussian", "NatureCNN", "make_encoder", "mlp"]
