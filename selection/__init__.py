"""selection: datasets, embeddings through a disk cache, and ranking zoo models by kNN and LogME."""
from zooens.selection.cache import EmbeddingCache, cache_key
from zooens.selection.datasets import (
    BUILTINS,
    ImageDataset,
    Split,
    load_dataset,
    validate,
    vtab_split,
)
from zooens.selection.embed import EmbeddingResult, embed_split, embed_with_cache
from zooens.selection.knn import knn_accuracy, knn_loo_accuracy, knn_predict, l2_normalise, logme_score
from zooens.selection.ranking import RANKING_COLUMNS, ModelScore, ranking_table, score_model

__all__ = [
    "BUILTINS",
    "EmbeddingCache",
    "EmbeddingResult",
    "ImageDataset",
    "ModelScore",
    "RANKING_COLUMNS",
    "Split",
    "cache_key",
    "embed_split",
    "embed_with_cache",
    "knn_accuracy",
    "knn_loo_accuracy",
    "knn_predict",
    "l2_normalise",
    "load_dataset",
    "logme_score",
    "ranking_table",
    "score_model",
    "validate",
    "vtab_split",
]
