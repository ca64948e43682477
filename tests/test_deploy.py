"""A real deployment on loopback: `flower-superlink` with TLS and SuperNode authentication,
one `flower-supernode` per hospital, `flwr run` — started with the same command builders the
README's `fedsynth deploy` steps use. Every process is stopped by PID in a finally; every wait
is bounded; each test has its own FLWR_HOME."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from conftest import write_tiny_dataset
from local_deploy import SITES, TINY, federation, finish_run, metrics_rows  # noqa: F401
from payload_oracle import expected_shared_keys, unexpected_metrics

from fedsynth.client.rounds import arrays_digest
from fedsynth.client.state_dir import SiteStateDir
from fedsynth.deploy.certs import make_node_key, make_server_certificates
from fedsynth.deploy.commands import node_config, run_command
from fedsynth.deploy.processes import stop, wait_for
from fedsynth.models.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("deploy") / "data", sites=SITES, n=4)


def test_key_material_is_what_flower_reads(tmp_path: Path) -> None:
    """The CA signs a server certificate for the given hosts; node keys are OpenSSH EC keys
    (what `flower-supernode --auth-supernode-private-key` loads); private files are 0600;
    nothing is overwritten."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    certs = make_server_certificates(tmp_path / "certs", ["127.0.0.1", "link.example.org"])
    ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(certs.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "link.example.org" in names.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    key = make_node_key(tmp_path / "keys", "hospA")
    assert isinstance(
        load_ssh_private_key(key.private.read_bytes(), None), ec.EllipticCurvePrivateKey
    )
    assert key.public.read_text().startswith("ecdsa-sha2-nistp384 ")
    for private in (certs.ca_key, certs.server_key, key.private):
        assert private.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError, match="already"):
        make_server_certificates(tmp_path / "certs", ["127.0.0.1"])
    with pytest.raises(FileExistsError, match="already"):
        make_node_key(tmp_path / "keys", "hospA")


def test_commands_and_node_config(tmp_path: Path, capsys) -> None:
    """Node config parses with Flower's own parser into absolute paths; the CLI steps print
    the exact Flower commands (dry run) and check their files first."""
    from flwr.common.config import parse_config_args

    from fedsynth.cli import main

    text = node_config(Path("data dir/hospA"), "hospA", Path("state"), epsilon_budget=3)
    parsed = parse_config_args([text])
    assert parsed["site"] == "hospA" and parsed["epsilon-budget"] == 3.0
    assert Path(parsed["data-dir"]).is_absolute() and parsed["data-dir"].endswith("data dir/hospA")
    cmd = run_command(
        Path("."), "fed", {"federation.num-rounds": 2, "data.root": "/d", "x.y": True}
    )
    assert cmd[-2:] == ["--run-config", 'federation.num-rounds=2 data.root="/d" x.y=true']
    assert main(["deploy", "certs", "--out", str(tmp_path / "c"), "--host", "127.0.0.1"]) == 0
    assert main(["deploy", "superlink", "--certs", str(tmp_path / "c"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "--enable-supernode-auth" in out and "--ssl-certfile" in out
    (tmp_path / "data").mkdir()
    args = ["deploy", "supernode", "--superlink", "h:1", "--key", str(tmp_path / "none.key")]
    args += ["--data", str(tmp_path / "data"), "--site", "a", "--state", str(tmp_path / "s")]
    assert main([*args, "--dry-run"]) == 2  # the key does not exist: a clear error
    assert "none.key: missing" in capsys.readouterr().out


def test_run_completes_when_a_site_dies_mid_run(federation) -> None:  # noqa: F811
    """(c) hospC's SuperNode is killed after round 1: round 2 goes on with hospA and hospB
    once the round timeout passes."""
    fed = federation
    fed.start_superlink()
    for site in SITES:
        fed.add_site(site)
    for site in SITES:
        fed.wait_connected(site)
    quick = {"federation.fraction-evaluate": 0.0}  # one process per site per round
    # The timeout must cover a round of three sites on this busy 2-core machine; round 2 then
    # waits for it once, for the dead site, before going on.
    run = fed.run(TINY | quick | {"federation.round-timeout": 90.0, "federation.min-nodes": 2})
    wait_for(lambda: fed.checkpoint(1).is_file(), 240, "round 1's checkpoint")
    stop(fed.procs["hospC"], signal.SIGKILL)
    finish_run(run, fed)
    rows = metrics_rows(fed)
    assert [r["round"] for r in rows] == [1, 2]
    assert len(rows[0]["sites"]) == 3
    trained = [s for s in rows[1]["sites"].values() if s.get("train_status") == "accepted"]
    assert len(trained) == 2
    # its state stays, for its return
    assert len(SiteStateDir(fed.site_state("hospC")).rounds()) == 1


def test_tls_authenticated_run_survives_a_server_crash(federation) -> None:  # noqa: F811
    """(a) TLS + SuperNode authentication, 2 sites, 2 rounds (train + evaluate), checkpoints;
    (b) a SuperNode whose key is not on the allow-list is refused; (d) the SuperLink and its
    ServerApp are killed at a deterministic point — after both sites logged training round 2,
    before round 2's checkpoint — and a new SuperLink on the same database and port with
    `resume-from` asks round 2 again: both sites REPLAY it (nothing retrained, nothing charged
    twice) and the run completes. What the server received is checked against the payload
    oracle (shared keys from network prefixes, metric names from the allow-list)."""
    fed = federation
    fed.start_superlink()
    for site in SITES[:2]:
        fed.add_site(site)
    fed.add_site("hospC", register=False)  # its key was never registered
    assert fed.procs["hospC"].wait(timeout=60) != 0
    assert "Failed to activate SuperNode" in fed.log("hospC")
    for site in SITES[:2]:
        fed.wait_connected(site)
    first = fed.run(TINY)
    logs = {site: SiteStateDir(fed.site_state(site)) for site in SITES[:2]}
    wait_for(lambda: all(len(d.rounds()) == 2 for d in logs.values()), 300, "round 2 at both")
    stop(fed.procs["superlink-0"], signal.SIGKILL)
    stop(first)
    assert not fed.checkpoint(2).exists(), "round 2 finished before the kill: not the point"
    round1 = fed.checkpoint(1).read_bytes()
    private = {
        site: {f: (d.path / f).read_bytes() for f in (d.MODEL, d.STATE, d.ACCOUNTANT, d.ROUNDS)}
        for site, d in logs.items()
    }

    fed.start_superlink()  # same port and database: the SuperNodes reconnect by themselves
    # Round 2 without client evaluation (one process start less per site; covered in round 1).
    resume = {"federation.resume-from": str(fed.run_dir), "federation.fraction-evaluate": 0.0}
    finish_run(fed.run(TINY | resume), fed)
    rows = metrics_rows(fed)
    assert [r["round"] for r in rows] == [1, 2]
    assert fed.checkpoint(1).read_bytes() == round1
    ckpt2 = load_checkpoint(fed.checkpoint(2))
    assert ckpt2.meta["round"] == 2
    assert ckpt2.meta["shared_keys"] == sorted(
        expected_shared_keys(ckpt2.model, "cyclegan", ("generators",))
    )
    for row in rows:
        assert len(row["sites"]) == 2  # hospC never took part
        for site in row["sites"].values():
            assert site["train_status"] == "accepted"
            for phase in ("train", "evaluate"):
                sent = {k.split("/", 1)[1] for k in site if k.startswith(f"{phase}/")}
                assert unexpected_metrics(dict.fromkeys(sent), phase) == set()
    assert all("evaluate/psnr_brain" in site for site in rows[0]["sites"].values())
    assert "https://127.0.0.1" in fed.log("superlink-1")  # TLS on the one API port
    ckpt1 = load_checkpoint(fed.checkpoint(1))
    state = ckpt1.model.state_dict()
    expected = arrays_digest({k: state[k].numpy() for k in ckpt1.meta["shared_keys"]})
    steps = TINY["federation.local-steps"]
    for site, d in logs.items():
        # a replay: every private file is byte for byte what it was at the crash
        assert {f: (d.path / f).read_bytes() for f in private[site]} == private[site]
        log = d.rounds()
        assert log[1]["input"] == expected  # round 2 started from round 1's checkpoint
        assert [r["step"] for r in log] == [steps, 2 * steps]
    assert not fed.site_state("hospC").exists()


def test_deploy_run_checks_the_whole_run_config_before_launching(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """A bad override fails before `flwr run` starts, naming the key; the check is of the run
    config the ServerApp builds (the app's defaults, then the overrides); a good override is
    passed on typed, and the verdict comes from status.json (none here: FAILED)."""
    import fedsynth.cli.deploy as deploy
    from fedsynth.cli import main

    launched: list[list[str]] = []

    def fake_run(cmd: list[str], env=None) -> subprocess.CompletedProcess:
        launched.append(cmd)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(deploy.subprocess, "run", fake_run)
    argv = ["deploy", "run", "--run-dir", str(tmp_path / "run")]
    assert main([*argv, "--set", "train.lr=-1"]) == 2
    assert "TrainConfig.lr must be > 0" in capsys.readouterr().out.replace("\n", " ")
    assert main([*argv, "--set", "train.lrr=1"]) == 2
    assert "unknown config key 'train.lrr'" in capsys.readouterr().out
    assert launched == []
    # FLAIR is one of the app's four contrasts, not of FedsynthConfig's default (T1, T2).
    assert main([*argv, "--set", "model.target=FLAIR"]) == 1
    assert main([*argv, "--set", "federation.num-rounds=4"]) == 1
    assert len(launched) == 2 and "federation.num-rounds=4" in launched[1][-1]
    out = capsys.readouterr().out
    assert "flwr run" in out and "run FAILED" in out and "no status.json" in out
