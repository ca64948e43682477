"""The pieces of benchmarks/federation.py, one concern each: simulated rounds (`simulated`),
bytes on the wire (`payload`), a real deployment on loopback (`deployed`), process-tree memory
(`memory`). They observe the product only through what it records — each round's phase times
in metrics.jsonl, each site's timings.jsonl — and Flower's public API."""
