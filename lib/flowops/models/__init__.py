"""Models on Spark ML: the reusable calibrated classifier trainer (`train_classifier`, `evaluate_scores`), the churn
model built on it (`churn`, registered in MLflow: `registry`), and the uplift model that ranks subscribers by
incremental conversion, with its Qini evaluation (`uplift`)."""

from flowops.models.classifier import ScoreEvaluation, TrainedClassifier, evaluate_scores, train_classifier

__all__ = ["ScoreEvaluation", "TrainedClassifier", "evaluate_scores", "train_classifier"]
