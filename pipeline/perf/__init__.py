"""`imas perf`: the performance benchmarks behind reports/benchmarks.md (issue: performance).

Each sub-command measures one thing on this machine and writes a JSON file (reports/perf/);
`imas perf report` renders them, with the machine they ran on, into reports/benchmarks.md.
"""
