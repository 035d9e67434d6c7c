"""Involution and the layers it is compared with.

`layers.Involution` is the layer; `layers.registry` the single list of layers
and models the suite compares; `layers.counting` their analytic parameters,
MACs and bytes; `layers.models` the networks of the Keras example and of the
paper.
"""

from layers.involution import Involution

__all__ = ["Involution"]
