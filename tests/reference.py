"""Plain-autograd references for the on-policy objectives, and a spy on the gradients an optimizer steps on.

The references share nothing with lightning_pg's fast paths: the standard policy is written out as separate
per-member MLPs in float64 with torch.distributions, and each objective in its textbook form. A test fits a
model through a real Trainer, records the minibatch and the weights its loss saw at a chosen optimizer step
and the gradient that step applied, and compares that gradient with the reference's.
"""
import pytorch_lightning as pl
import torch

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


def standard_forward(params, obs, activation="tanh"):
    """(torch distribution, value or None) of the standard ActorCritic from its named parameters, per member."""
    x = obs.double().flatten(1)
    layers = sum(1 for name in params if name.startswith("body.weights."))
    members = params["body.weights.0"].shape[0] if layers else 2
    features = []
    for m in range(members):
        h = x
        for k in range(layers):
            h = ACTIVATIONS[activation](h @ params[f"body.weights.{k}"][m] + params[f"body.biases.{k}"][m, 0])
        features.append(h)
    if "pi_head.log_std" in params:
        mean = features[0] @ params["pi_head.mean.weight"] + params["pi_head.mean.bias"]
        dist = torch.distributions.Independent(torch.distributions.Normal(mean, params["pi_head.log_std"].exp()), 1)
    else:
        dist = torch.distributions.Categorical(logits=features[0] @ params["pi_head.weight"] + params["pi_head.bias"])
    value = features[1] @ params["v_head.weight"] + params["v_head.bias"] if "v_head.weight" in params else None
    return dist, value


def log_prob(dist, actions):
    return dist.log_prob(actions.long() if isinstance(dist, torch.distributions.Categorical) else actions.double())


def ppo_objective(hp, dist, values, mb):
    """−L^CLIP + vf_coef · (V − R)² (V clipped around the old value with clip_range_vf) − ent_coef · H."""
    ratio = torch.exp(log_prob(dist, mb["actions"]) - mb["log_probs"].double())
    adv, eps = mb["advantages"].double(), hp["clip_range"]
    surrogate = torch.min(ratio * adv, torch.clamp(ratio, 1 - eps, 1 + eps) * adv)
    old = mb["values"].double()
    if hp["clip_range_vf"] is not None:
        values = old + torch.clamp(values - old, -hp["clip_range_vf"], hp["clip_range_vf"])
    value_loss = ((values - mb["returns"].double()) ** 2).mean()
    return -surrogate.mean() + hp["vf_coef"] * value_loss - hp["ent_coef"] * dist.entropy().mean()


def a2c_objective(hp, dist, values, batch):
    """−log π(a|s) · Â + vf_coef · (V − R)² − ent_coef · H, Â standardized when normalize_advantage."""
    adv = batch["advantages"].double()
    if hp["normalize_advantage"]:
        adv = (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-8)
    value_loss = ((values - batch["returns"].double()) ** 2).mean()
    policy_loss = -(log_prob(dist, batch["actions"]) * adv).mean()
    return policy_loss + hp["vf_coef"] * value_loss - hp["ent_coef"] * dist.entropy().mean()


def clipped(grads, max_norm):
    """torch.nn.utils.clip_grad_norm_'s rule on a dict of gradients."""
    if max_norm is None:
        return grads
    norm = torch.sqrt(sum(g.square().sum() for g in grads.values()))
    scale = min(1.0, max_norm / (float(norm) + 1e-6))
    return {k: g * scale for k, g in grads.items()}


def reference_gradient(model, record, objective, forward=standard_forward, extra=None):
    """The clipped gradient of ``objective`` (+ ``extra(dist, values, batch)``) at the recorded weights and batch."""
    params = {k: v.double().requires_grad_() for k, v in record["weights"].items()}
    dist, values = forward(params, record["batch"]["obs"])
    loss = objective(dict(model.hparams), dist, values, record["batch"])
    if extra is not None:
        loss = loss + extra(dist, values, record["batch"])
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    return clipped(grads, model.hparams.max_grad_norm), dist


def record_step(model, step, **trainer_kwargs):
    """Fit ``model`` until its optimizer has stepped ``step + 1`` times; return what the loss saw at that step
    (``batch``, policy ``weights``) and the gradient the step applied (``grads``, by parameter name)."""
    record, seen = {}, []
    original_loss = model.loss

    def loss(batch):
        seen.append(({k: v.detach().clone() for k, v in batch.items() if torch.is_tensor(v)},
                     {n: p.detach().clone() for n, p in model.policy.named_parameters()}))
        return original_loss(batch)

    class Spy(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            optimizer = trainer.optimizers[0]
            original_step, count = optimizer.step, [0]

            def spied_step(*args, **kwargs):
                if count[0] == step:
                    record["batch"], record["weights"] = seen[-1]
                    record["grads"] = {n: p.grad.detach().clone() for n, p in model.policy.named_parameters()}
                    record["direct"] = pl_module._optimizer_steps.direct
                    trainer.should_stop = True
                count[0] += 1
                return original_step(*args, **kwargs)

            optimizer.step = spied_step

    model.loss = loss
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False, max_epochs=-1,
                         enable_model_summary=False, callbacks=[Spy()], **{"accelerator": "cpu", **trainer_kwargs})
    trainer.fit(model)
    assert "grads" in record, f"the optimizer stepped fewer than {step + 1} times"
    return record


def assert_gradients_match(record, expected):
    assert record["grads"].keys() == expected.keys()
    for name, grad in expected.items():
        torch.testing.assert_close(record["grads"][name].double(), grad, rtol=2e-4, atol=2e-6, msg=name)
