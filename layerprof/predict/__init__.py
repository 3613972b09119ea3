"""Predictions before you rent: the same cells on fake tensors, composed runs of alike layers, the step-time
model and per-layer costs."""
