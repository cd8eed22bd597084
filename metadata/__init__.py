"""Tiger's data side: the ultrasound phantom, the training layout and the classifier layout."""

from metadata.records import MetadataRecord, read_metadata, write_metadata
from metadata.vocabulary import NoduleAttributes, compose_text_nd

__all__ = [
    "MetadataRecord",
    "NoduleAttributes",
    "compose_text_nd",
    "read_metadata",
    "write_metadata",
]
