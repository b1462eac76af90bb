"""The training recipe's gradient checkpointing: the checkpointed token runner gives the loss and the LoRA
gradients of the plain forward."""

import copy

import torch
from conftest import caption, relative_error

from lumina_core.flow_matching import checkpointed_runner, flow_matching_loss
from lumina_core.lora import add_lora, lora_layers

GRAD_TOL = 1e-5
"""The same fp32 operations recomputed in the backward pass (measured: identical on CPU)."""


def loss_and_grads(model) -> tuple[torch.Tensor, list[torch.Tensor]]:
    x1 = torch.randn(2, 4, 4, 8, 12, generator=torch.Generator().manual_seed(1))
    feats, mask = caption(2, 6, model.config.cap_feat_dim, [6, 3])
    loss = flow_matching_loss(model, x1, feats, mask, torch.tensor([3.0, -1.0]), 2, 1,
                              torch.Generator().manual_seed(2), shift=4.0).mean()
    loss.backward()
    layers = lora_layers(model).values()
    return loss.detach(), [w.grad for layer in layers for w in (layer.down.weight, layer.up.weight)]


def test_checkpointed_blocks_give_the_plain_loss_and_gradients(tiny_model):
    plain = copy.deepcopy(tiny_model)
    for layer in add_lora(plain, rank=2).values():
        layer.up.weight.data.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    checkpointed = copy.deepcopy(plain)
    checkpointed.set_token_runner(checkpointed_runner(checkpointed))
    plain_loss, plain_grads = loss_and_grads(plain)
    loss, grads = loss_and_grads(checkpointed)
    assert relative_error(loss, plain_loss) < GRAD_TOL
    assert all(g is not None and relative_error(g, p) < GRAD_TOL for g, p in zip(grads, plain_grads))
    assert any(p.abs().max() > 0 for p in plain_grads)
