"""Metrics: classification (accuracy, F1, AUROC, confusion matrix) and explanations (e-ViL scores, BERTScore)."""
