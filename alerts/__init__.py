"""Prometheus rules (``rules/*.yml``) and Alertmanager routing (``alertmanager.yml``); installed as
``freight.alerts``.

This file only makes the folder a package so that an installed freight carries the files
(``importlib.resources.files("freight.alerts")``); see docs/decisions/0050.
"""
