"""Thin Airflow adapters: context and connections in, a library call, small JSON out."""
