"""A gallery: embeddings of many images, made once, searched for the items nearest a query.

`store` writes and reads a gallery folder (whole-folder swaps, checksums, the identity of the
model that made it, streamed builds and adds), `items` reads the images to put in one a chunk
at a time, `faiss_index` makes, saves and reads the gallery's own FAISS index, `lock` lets one
writer at a time change a gallery, `search` finds the top-k items of a query with the model's
own head (`siamnet.models.heads.PairHead`). Everything is re-exported here.
"""

from __future__ import annotations

from siamnet.gallery.faiss_index import (
    INDEX_DEFAULTS,
    INDEX_FILE,
    INDEX_METHODS,
    IndexSpec,
    import_faiss,
)
from siamnet.gallery.items import (
    GalleryItems,
    content_hashes,
    iter_gallery_items,
    read_gallery_items,
)
from siamnet.gallery.lock import LOCK_WAIT_S, gallery_lock
from siamnet.gallery.search import (
    SEARCH_METHODS,
    ExactSearch,
    FaissSearch,
    IndexSearch,
    RerankSearch,
    check_search_options,
    head_for,
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
    Embedded,
    Gallery,
    add_items_to_gallery,
    add_to_gallery,
    build_gallery,
    build_gallery_from,
    checkpoint_identity,
    embed_items,
    index_dim_and_metric,
    load_gallery,
    refuse_existing_gallery,
    save_gallery,
    with_index,
)

__all__ = [
    "add_items_to_gallery",
    "add_to_gallery",
    "build_gallery",
    "build_gallery_from",
    "check_search_options",
    "checkpoint_identity",
    "CHECKPOINT_RECORD_FIELDS",
    "content_hashes",
    "embed_items",
    "Embedded",
    "EMBEDDINGS_FILE",
    "ExactSearch",
    "FaissSearch",
    "FORMAT",
    "FORMAT_VERSION",
    "Gallery",
    "GALLERY_FIELDS",
    "gallery_lock",
    "GalleryItems",
    "head_for",
    "import_faiss",
    "INDEX_DEFAULTS",
    "index_dim_and_metric",
    "INDEX_FILE",
    "INDEX_METHODS",
    "IndexSearch",
    "IndexSpec",
    "INFO_FILE",
    "iter_gallery_items",
    "load_gallery",
    "LOCK_WAIT_S",
    "make_searcher",
    "read_gallery_items",
    "refuse_existing_gallery",
    "RerankSearch",
    "save_gallery",
    "search",
    "search_matches",
    "SEARCH_METHODS",
    "shown_name",
    "with_index",
]
