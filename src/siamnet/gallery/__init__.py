"""A gallery: embeddings of many images, made once, searched for the items nearest a query.

`store` writes and reads a gallery folder (whole-folder swaps, checksums, the identity of the
model that made it), `items` reads the images to put in one, `search` finds the top-k items of
a query with the model's own head (`siamnet.models.heads.PairHead`). Everything is re-exported
here.
"""

from __future__ import annotations

from siamnet.gallery.items import GalleryItems, read_gallery_items
from siamnet.gallery.search import (
    SEARCH_METHODS,
    ExactSearch,
    FaissSearch,
    RerankSearch,
    check_search_options,
    head_for,
    import_faiss,
    make_searcher,
    search,
    search_matches,
    shown_name,
)
from siamnet.gallery.store import (
    CHECKPOINT_RECORD_FIELDS,
    EMBEDDINGS_FILE,
    FORMAT,
    FORMAT_VERSION,
    GALLERY_FIELDS,
    INFO_FILE,
    Gallery,
    add_to_gallery,
    build_gallery,
    checkpoint_identity,
    load_gallery,
    refuse_existing_gallery,
    save_gallery,
)

__all__ = [
    "CHECKPOINT_RECORD_FIELDS",
    "EMBEDDINGS_FILE",
    "ExactSearch",
    "FORMAT",
    "FORMAT_VERSION",
    "FaissSearch",
    "GALLERY_FIELDS",
    "Gallery",
    "GalleryItems",
    "INFO_FILE",
    "RerankSearch",
    "SEARCH_METHODS",
    "add_to_gallery",
    "build_gallery",
    "check_search_options",
    "checkpoint_identity",
    "head_for",
    "import_faiss",
    "load_gallery",
    "make_searcher",
    "read_gallery_items",
    "refuse_existing_gallery",
    "save_gallery",
    "search",
    "search_matches",
    "shown_name",
]
