"""Evaluation protocols: functions of cached features and labels (zero-shot, linear probe, verification, ...)."""
