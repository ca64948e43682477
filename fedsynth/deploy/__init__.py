"""Multi-hospital deployment on Flower's own engine (SuperLink, SuperNodes, `flwr run`):
key material (`certs`), the exact command lines (`commands`), process handling on one machine
(`processes`, `local`) and the `fedsynth deploy` steps (`cli`). README: "Deploy across
hospitals"."""
