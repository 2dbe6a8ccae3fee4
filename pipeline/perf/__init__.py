"""`imas perf`: the performance benchmarks behind benchmarks/perf/benchmarks.md.

Each sub-command measures one thing on this machine and writes a JSON file
(benchmarks/perf/results/); `imas perf report` renders them, with the machine they ran on, into
benchmarks/perf/benchmarks.md. Timings belong to a machine, so they live outside reports/,
whose files CI regenerates byte for byte.
"""
