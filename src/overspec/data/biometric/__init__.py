"""Biometric data helpers: face alignment (``align``) and protocol lists shared by the biometric protocols."""
