"""A second real embedding model for tests, made from the packaged one: only one
sentence-transformers model ships offline (all-MiniLM-L6-v2, 384 dimensions), and
re-embedding needs two. `projected_model` saves all-MiniLM-L6-v2 followed by a fixed
random projection to fewer dimensions (then unit length): another name, another width,
vectors that cannot be compared with the first model's, yet still meaningful (a random
projection keeps cosine similarities roughly, Johnson-Lindenstrauss)."""

from __future__ import annotations

from pathlib import Path

from orchard.knowledge.embeddings import packaged_model_dir


def projected_model(directory: Path, dimension: int = 128, seed: int = 0) -> Path:
    """Save the projected model as a sentence-transformers directory at `directory`."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    base = SentenceTransformer(str(packaged_model_dir()), device="cpu", local_files_only=True)
    width = int(base.get_embedding_dimension())
    weights = torch.randn(dimension, width, generator=torch.Generator().manual_seed(seed))
    projection = Dense(
        width,
        dimension,
        bias=False,
        activation_function=torch.nn.Identity(),
        init_weight=weights / width**0.5,
    )
    model = SentenceTransformer(modules=[*base, projection, Normalize()], device="cpu")
    model.save(str(directory))
    return directory
