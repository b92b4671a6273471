"""Game days: a plan of Chaos Toolkit experiments run in sequence against one cluster, each under
a workload whose every result is checked, with go/no-go prompts, timestamped notes, recovery
times and a report (Markdown, JUnit XML, an SVG timeline and the experiments' journals).

`freight gameday run PLAN.yaml` (:mod:`freight.cli.gameday_cmd`) drives :mod:`.runner`; the plan
is :mod:`.plan`; the workload driver :mod:`.workload`; the report :mod:`.report`. See
docs/gameday.md.
"""
