"""A hyperparameter that is a pydantic model (an optimizer's settings)."""

import torch
from pydantic import BaseModel

import lightkit as lk


class Opt(BaseModel):
    lr: float = 0.1
    momentum: float = 0.0


@lk.model
def net():
    return torch.nn.Linear(2, 1)


@lk.configure_optimizers
def optim(net, opt: Opt = Opt()):
    return torch.optim.SGD(net.parameters(), lr=opt.lr, momentum=opt.momentum)
