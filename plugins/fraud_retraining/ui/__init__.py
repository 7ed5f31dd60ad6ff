"""What the Airflow UI shows of the model registry: JSON view models and server-rendered pages.

Plain library code (no Airflow import): the Airflow plugin module `plugins/fraud_retraining_ui.py`
adds authentication, connections and routes around it.
"""
