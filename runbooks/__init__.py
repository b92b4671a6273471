"""The runbooks, one ``<AlertName>.md`` page per alert; installed as ``freight.runbooks``.

This file only makes the folder a package so that an installed freight carries the pages
(``importlib.resources.files("freight.runbooks")``); see docs/decisions/0050.
"""
