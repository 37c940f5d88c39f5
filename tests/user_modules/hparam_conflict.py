import lightkit as lk


@lk.train_data
def train_loader(batch_size: int = 64, workers: int = 2):
    return [batch_size, workers]


@lk.val_data
def val_loader(batch_size: int = 32, workers: float = 2.0):
    return [batch_size, workers]


@lk.test_data
def test_loader(batch_size: int = 64):
    return [batch_size]
