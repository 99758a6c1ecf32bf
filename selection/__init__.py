"""selection: datasets, embeddings through a disk cache, ranking zoo models by kNN and LogME, auditing the ranking."""

from zooens.selection.audit import (
    Correlation,
    PredictorAudit,
    RankingAudit,
    audit_ranking,
    best_accuracy_per_model,
    kendall_tau_b,
    spearman_rho,
)
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
    "Correlation",
    "EmbeddingCache",
    "EmbeddingResult",
    "ImageDataset",
    "ModelScore",
    "PredictorAudit",
    "RANKING_COLUMNS",
    "RankingAudit",
    "Split",
    "audit_ranking",
    "best_accuracy_per_model",
    "cache_key",
    "embed_split",
    "embed_with_cache",
    "kendall_tau_b",
    "knn_accuracy",
    "knn_loo_accuracy",
    "knn_predict",
    "l2_normalise",
    "load_dataset",
    "logme_score",
    "ranking_table",
    "score_model",
    "spearman_rho",
    "validate",
    "vtab_split",
]
