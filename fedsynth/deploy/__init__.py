"""Multi-hospital deployment on Flower's own engine (SuperLink, SuperNodes, `flwr run`):
key material (`certs`), the exact command lines (`commands`), process handling on one machine
(`processes`, `local`); the `fedsynth deploy` steps are in
`fedsynth.cli.deploy`. README: "Deploy across
hospitals"."""
