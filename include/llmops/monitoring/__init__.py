"""Monitoring of deployed models: data drift, live quality, alerts and retraining triggers."""
