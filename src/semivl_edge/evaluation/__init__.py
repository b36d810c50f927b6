"""Evaluation: inference (whole image or sliding windows), the metric, latency, the evaluation stages' support.

An evaluation directory (reports/<stage>/) holds the names below; the report reads them without importing the
evaluation code."""

PREDICTIONS_DIR = "predictions"  # <id>.png palette predictions of the first eval.qualitative val images
PER_CLASS_CSV = "per_class_iou.csv"
