"""Prefect flows that run the DVC DAG (dvc.yaml) and their deployments."""
