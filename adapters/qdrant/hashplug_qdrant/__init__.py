"""hashplug-qdrant: hashplug codes in Qdrant, as ±1 vectors with binary quantization.

Store kinds (entry points of the ``hashplug.stores`` group):

* ``qdrant://host:port/collection`` -> :class:`QdrantStore` (a Qdrant server / cluster / Cloud)
* ``qdrant+local://PATH/collection`` -> :class:`QdrantStore` (qdrant-client's local mode)
* ``qdrant-edge://PATH`` -> :class:`QdrantEdgeStore` (Qdrant Edge: the Qdrant engine in-process)

Both stores do the coarse Hamming search on Qdrant's 1-bit quantized vectors and offer
``search_rescored(query_logits, k, oversample, filter)``: the asymmetric rerank computed inside
Qdrant by rescoring the candidates with tanh(u / 2) (see ``hashplug_qdrant._common``).
"""

from .client import QdrantStore
from .edge import QdrantEdgeStore, edge_config
from .filters import to_client_filter, to_edge_filter

__all__ = ["QdrantStore", "QdrantEdgeStore", "edge_config", "to_client_filter", "to_edge_filter"]
__version__ = "0.1.0"
