"""Knowledge: documents users upload, cut into chunks, embedded, and searched.

- `embeddings`: the one embedder (a sentence-transformers model, the packaged
  all-MiniLM-L6-v2 by default) and the `EmbeddingModel` recorded with every vector;
- `vectors`: the vector-store interface, its errors and re-embedding; `lance` (embedded
  default) and `weaviate_store` (production) implement it;
- `files`: what an uploaded file is (sniffed from its bytes), its limits, and parsing it
  into sections; `chunking`: sections into overlapping chunks.

Nothing here knows about users or HTTP: the platform API (platform_api/knowledge.py)
decides who owns what and passes the owner to every store call.
"""
