"""The seed model zoo: nine reference networks, trained on real offline data.

Example:
    >>> from compress.zoo import train_zoo_model
    >>> result = train_zoo_model("mnist_cnn", epochs=1)
    >>> result.metrics["task"]["name"]
    'accuracy'
"""
from compress.zoo.registry import ZOO, ZooEntry, zoo_entry
from compress.zoo.train import TrainResult, default_checkpoint_path, train_zoo_model

__all__ = ["ZOO", "ZooEntry", "zoo_entry", "TrainResult", "default_checkpoint_path", "train_zoo_model"]
