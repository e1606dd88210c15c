"""The ML steps: plain functions of a typed spec and a run context, with no Airflow import.

Each step's module exposes ``run(spec, ctx, store) -> result``; :mod:`mlops_ops.steps.registry`
declares them and loads a module only when its step runs.
"""
