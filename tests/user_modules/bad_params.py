import lightkit as lk


@lk.model
def net(optimizer, hidden: int = 8):
    return hidden


@lk.training_step
def train(net, batch, foo):
    return batch


@lk.configure_optimizers
def optim(net, *params, lr: float = 0.1, **kwargs):
    return lr


@lk.train_data
def loader(batch_size, /, shuffle: bool = False):
    return batch_size


@lk.on("fit_start")
def announce(net, batch):
    return None
