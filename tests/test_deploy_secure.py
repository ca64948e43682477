"""SecAgg+ across real SuperNodes: a SuperLink with TLS and SuperNode authentication, three
SuperNodes as separate processes on 127.0.0.1 (fedsynth.deploy.local), one secure round, and
one SuperNode killed (SIGKILL, by PID, with its Flower children) once SecAgg+ has begun at it.

What happens then (Flower's SecAggPlusWorkflow with fedsynth.server.secure's settings):
`num_shares=1.0` makes every one of the n = 3 sampled sites a neighbour of every other (3
shares of each secret), `reconstruction_threshold=0.5` needs t = max(2, round(0.5·3)) = 2 of
them. The killed site had sent its public keys and its encrypted key shares; the survivors'
masked vectors carry pairwise masks with it that only its secret key removes. The server
waits for its masked vector until the SuperLink reports the node unavailable (its heartbeat
expires, ≤ 60 s) or the round timeout passes, then asks the two survivors for their shares:
2 ≥ t shares rebuild the dead site's key (its pairwise masks come off) and each survivor's
mask seed (their own masks come off). So the round completes, with the survivors' weighted
FedAvg, and the run goes on. With only 2 sites t would be 2 of 2 and a dropout halts the
round (tests/test_secure.py::test_failed_secure_round_is_a_failure: the run fails).

What the server held is read where it enters the coordinator's ServerApp process: the test runs
fedsynth's ServerApp unchanged behind a Grid that saves every reply it receives
(tests/secagg_recorder.py).
"""

from __future__ import annotations

import re
import signal
import time

import numpy as np
import pytest
from conftest import write_tiny_dataset
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from local_deploy import SITES, TINY, federation, finish_run, metrics_rows  # noqa: F401
from safetensors.numpy import load_file
from secagg_oracle import aggregate_bound, read_as_unmasked, weighted_mean
from secagg_recorder import load_received, received_dir, recording_app

from fedsynth.client.state_dir import SiteStateDir
from fedsynth.config import FedsynthConfig
from fedsynth.deploy.local import APP, LocalFederation
from fedsynth.deploy.processes import stop, wait_for
from fedsynth.models.checkpoint import load_checkpoint

# Unequal survivors (training slices follow the subjects), so a weighted and an unweighted mean
# differ by more than the tolerance.
SUBJECTS = {"hospA": 3, "hospB": 6, "hospC": 3}
DROPPED = "hospC"
SECURE = TINY | {
    "federation.secure-aggregation": True,
    "federation.num-rounds": 1,
    "federation.local-steps": 2,
    "train.lr": 2e-3,  # the app's own lr: two steps move the sites apart well beyond the bound
    "federation.min-nodes": 3,  # the round samples all three (they are connected before it)
    "federation.fraction-evaluate": 0.0,  # no evaluate messages: one process start less each
}
# The SuperNode's own log, one line per message it pulls / answers (flwr 1.42).
PULLED, ANSWERED = "Receiving: train message", "Sending: train message"
MASKED = f"config_records/{RECORD_KEY_CONFIGS}/{Key.MASKED_PARAMETERS}"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("secure") / "data"
    return write_tiny_dataset(root, sites=SITES, n=tuple(SUBJECTS[s] for s in SITES))


def _messages(fed: LocalFederation, site: str) -> tuple[int, int]:
    log = fed.log(site)
    return log.count(PULLED), log.count(ANSWERED)


def _masking_began(fed: LocalFederation, site: str) -> bool:
    """SecAgg+ has begun at `site`: it answered stage 0 (its two public keys) and stage 1 (its
    secret split into encrypted shares for the other sites) and pulled stage 2 — the others'
    shares for it and the fit instruction: train, mask the update, upload it."""
    return _messages(fed, site) == (3, 2)


def _node_id(fed: LocalFederation, site: str) -> int:
    found = re.search(r"SuperNode ID: (\d+)", fed.log(site))
    assert found, fed.log(site)[-2000:]
    return int(found.group(1))


def test_secagg_round_survives_a_supernode_killed_while_masking(federation, tmp_path) -> None:  # noqa: F811
    """(1) TLS + authentication, 3 SuperNodes, SecAgg+, one round of 2 local steps; (2) hospC
    is killed once SecAgg+ has begun at it (see `_masking_began`); (3) the round completes
    with hospA and hospB; (4) its aggregate is their weighted FedAvg within SecAgg+'s
    quantisation error (secagg_oracle.aggregate_bound); (5) the server never received a
    site's update: no plain tensor, no update's bytes, and one site's vector alone decodes to
    noise."""
    fed, began = federation, time.monotonic()
    app = recording_app(tmp_path / "app", APP)
    fed.start_superlink()
    for site in SITES:
        fed.add_site(site)
    for site in SITES:
        fed.wait_connected(site)
    nodes = {site: _node_id(fed, site) for site in SITES}
    run = fed.run(SECURE, app=app)
    # A stage-2 message takes seconds before its reply (a fresh flwr-clientapp: imports,
    # training, masking); polled every 50 ms, the kill comes well before.
    wait_for(lambda: _masking_began(fed, DROPPED), 240, f"SecAgg+ to begin at {DROPPED}", 0.05)
    stop(fed.procs[DROPPED], signal.SIGKILL)
    killed = time.monotonic()
    assert _messages(fed, DROPPED) == (3, 2), f"{DROPPED} was not killed during stage 2"
    finish_run(run, fed)
    done = time.monotonic()
    print(f"\nkilled {killed - began:.0f} s in; run over {done - killed:.0f} s after the kill")

    # (3) One round, trained and aggregated by the two survivors; hospC never trained.
    survivors = [s for s in SITES if s != DROPPED]
    rows = metrics_rows(fed)
    assert [r["round"] for r in rows] == [1]
    assert {s["node"]: s["train_status"] for s in rows[0]["sites"].values()} == {
        nodes[s]: "accepted" for s in survivors
    }
    assert "Secure aggregation completed" in fed.log("flwr-run")
    assert SiteStateDir(fed.site_state(DROPPED)).rounds() == []

    # (4) The aggregate against the survivors' own updates: each site's model.safetensors is
    # what it trained (no EMA: the update is the model) and its rounds.jsonl its num-examples.
    cfg = FedsynthConfig.from_flat(SECURE)
    assert cfg.train.ema_decay == 0
    ckpt = load_checkpoint(fed.checkpoint(1))
    keys = ckpt.model.shared_keys(cfg.federation.shared_groups, cfg.federation.keep_norm_local)
    assert ckpt.meta["shared_keys"] == sorted(keys)
    aggregate = {k: v.numpy() for k, v in ckpt.model.state_dict().items()}
    states = [SiteStateDir(fed.site_state(s)) for s in survivors]
    updates = [load_file(str(d.model_file)) for d in states]
    counts = [d.rounds()[0]["metrics"]["num-examples"] for d in states]
    assert counts[0] != counts[1], counts
    # The tolerance (derivation in secagg_oracle.aggregate_bound): with c = 8, T = 2**22,
    # M = 1000, k = 2 sites of n_i slices, |A − F| ≤ (2·16/2**22 + 2·X·Σ|r_i − n_i/M|)/Σr_i
    # + X·2**-23, r_i = round(n_i·T/M)/T — about 2·3.8e-6·1000/Σn_i.
    bound = aggregate_bound(counts, updates, keys)

    def mean(weights: list[float], key: str) -> np.ndarray:
        return weighted_mean(weights, updates, key)

    worst = max(float(np.abs(aggregate[k] - mean(counts, k)).max()) for k in keys)
    assert worst <= bound, (worst, bound)
    unweighted = max(float(np.abs(mean([1, 1], k) - mean(counts, k)).max()) for k in keys)
    assert unweighted > 3 * bound, (unweighted, bound)  # the check tells the two apart
    print(f"aggregate off by {worst:.2e} ≤ {bound:.2e}; unweighted mean {unweighted:.2e} away")

    # (5) Everything the ServerApp process received, reply by reply.
    received = load_received(received_dir(fed.run_dir))
    answers = {(m.get("dst_node_id", m["src_node_id"]), m.get("stage")): m for m, _ in received}
    stages = [Stage.SETUP, Stage.SHARE_KEYS, Stage.COLLECT_MASKED_VECTORS, Stage.UNMASK]
    for site in survivors:
        assert all(answers[nodes[site], st]["error"] is None for st in stages), site
    dead = nodes[DROPPED]
    assert all(answers[dead, st]["error"] is None for st in stages[:2])
    lost = answers.get((dead, Stage.COLLECT_MASKED_VECTORS))
    assert lost is None or lost["error"] is not None, "hospC's masked vector arrived"
    print(f"{DROPPED}'s stage-2 reply: {lost['error'] if lost else 'none (round timeout)'}")
    # No plain tensor: secaggplus_mod empties the fit reply's ArrayRecords.
    plain = [n for _, a in received for n in a if n.startswith("array_records/")]
    assert plain == [], plain
    # No update's bytes anywhere in what arrived (float32 as trained, or float64).
    blob = b"".join(a.tobytes() for _, arrays in received for a in arrays.values())
    for site, update in zip(survivors, updates, strict=True):
        for k in keys:
            flat = update[k].reshape(-1)[:16]
            if not flat.any():
                continue  # zeros prove nothing
            for window in (flat.astype(np.float32), flat.astype(np.float64)):
                assert window.tobytes() not in blob, (site, k)
    # One site's masked vector alone: read as if unmasked it is noise, not the site's update
    # (without masks it would be that update within one quantisation level: ≤ s/r_i). Planted
    # once — Flower's `pseudo_rand_gen` returning zeros at the sites and at the server, so the
    # round still completes with the right aggregate — this is the assertion that failed:
    # hospA's vector read as weight 32.00006 (it had 32) and its update to within 1.1e-4.
    vectors = {
        m["src_node_id"]: [
            bytes_to_ndarray(a[f"{MASKED}/{i}"].tobytes()) for i in range(1 + len(keys))
        ]
        for m, a in received
        if m.get("stage") == Stage.COLLECT_MASKED_VECTORS and m["error"] is None
    }
    assert set(vectors) == {nodes[s] for s in survivors}
    for site, update, count in zip(survivors, updates, counts, strict=True):
        weight, tensors = read_as_unmasked(vectors[nodes[site]])
        assert [t.shape for t in tensors] == [update[k].shape for k in keys]
        error = max(float(np.abs(t - update[k]).max()) for t, k in zip(tensors, keys, strict=True))
        assert abs(weight - count) > 1 and error > 1000 * bound, (site, weight, count, error)
    print(f"took {time.monotonic() - began:.0f} s")
