import lightkit as lk


@lk.model
def net():
    return "net"


@lk.training_step
def train(net, batch):
    return batch


@lk.training_step
def train_again(net, batch):
    return batch
