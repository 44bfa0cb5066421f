"""The steps of a build after conversion: verify, gate, repair, time, advise.

- pipeline: verify artifacts in their runtimes and assemble the run's report; gates: the one gate evaluator.
- repair: fix an int8 artifact that fails its gates; advice: speed honesty from measured numbers.
- benchmark: an artifact's latency on a target; latency: which latency speaks for an artifact.
- recording: a measurement put into an existing run's report, its figures judged again.
- phases: wall and CPU seconds per phase; ahead: TFLite/.pte converted in a second process.
"""
