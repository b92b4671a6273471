"""Game days: a plan of Chaos Toolkit experiments run in sequence against one cluster, each under
a workload whose every result is checked, with go/no-go prompts, timestamped notes, recovery
times and a report (Markdown, JUnit XML, an SVG timeline and the experiments' journals).

`freight gameday run PLAN.yaml` (:mod:`freight.cli.gameday_cmd`) drives :mod:`.runner`; the plan
is :mod:`.plan`; the cluster and the on-call pack :mod:`.site`; the workload :mod:`.workload`
(started and stopped through :mod:`.driver`); what happened :mod:`.record`, watched by
:mod:`.watch`; the report :mod:`.report`; notes :mod:`.notes`. See docs/gameday.md.
"""
