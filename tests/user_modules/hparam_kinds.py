"""One hyperparameter of every kind the hyperparameter model must understand."""

import enum
from typing import Annotated, Literal, Optional

from pydantic import Field

import lightkit as lk


class Norm(enum.Enum):
    BATCH = "batch"
    LAYER = "layer"


@lk.model
def net(
    hidden: int = 64,
    activation: Literal["relu", "gelu"] = "relu",
    dropout: Optional[float] = None,
    sizes: tuple[int, ...] = (32, 16),
    norm: Norm = Norm.BATCH,
    bias=True,
):
    return (hidden, activation, dropout, sizes, norm, bias)


@lk.configure_optimizers
def optim(
    net,
    lr: float = Field(1e-3, gt=0, description="peak learning rate"),
    weight_decay: Annotated[float, Field(ge=0, description="AdamW weight decay")] = 0.01,
    betas: tuple[float, float] = (0.9, 0.999),
    momentum=Field(0.9, le=1),
    tag: "str" = "run",
):
    return (lr, weight_decay, betas, momentum, tag)
