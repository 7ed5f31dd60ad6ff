"""Fraud-model retraining library: a plain Python package that the operators adapt to Airflow.

The library modules (config, simulator, features, metrics, registry, serving, scoring) never
import Airflow, so the endpoint and the scoring handler ship without a scheduler.
"""
