"""Networks that put the layers in context: the Keras example's CIFAR-10
classifiers and the paper's RedNet against ResNet."""

from layers.models.resnet import STAGES, rednet, resnet
from layers.models.seed import kernel_map_model, seed_conv_model, seed_involution_model

__all__ = ["STAGES", "kernel_map_model", "rednet", "resnet", "seed_conv_model", "seed_involution_model"]
