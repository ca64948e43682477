"""`fedsynth export` and `fedsynth view`: a trained model for other tools (a MONAI bundle) and
a run in the browser (TensorBoard on its event files)."""

from __future__ import annotations

import argparse
import socket
import time
from pathlib import Path

from fedsynth.cli.common import console

FORMATS = ("monai-bundle",)


def cmd_export(args: argparse.Namespace) -> int:
    from fedsynth.export.monai_bundle import export_monai_bundle
    from fedsynth.pretrained import checkpoint_path

    out = export_monai_bundle(
        checkpoint_path(args.checkpoint), args.out, source=args.source, target=args.target
    )
    console.print(f"[green]wrote[/] MONAI bundle {out}")
    console.print(
        f"run it: python -m monai.bundle run --config_file {out}/configs/inference.json "
        f"--meta_file {out}/configs/metadata.json --bundle_root {out} --dataset_dir IN "
        "--output_dir OUT",
        soft_wrap=True,
    )
    return 0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def cmd_view(args: argparse.Namespace) -> int:
    from tensorboard import program

    from fedsynth.server.tensorboard import BOARD_DIR

    run = Path(args.run)
    if not (run / "config.json").is_file():
        raise FileNotFoundError(f"{run}: not a fedsynth run directory (no config.json)")
    logdir = run / BOARD_DIR
    if not logdir.is_dir():
        console.print(f"[yellow]{logdir} has no events yet; they appear after the first round[/]")
    port = args.port or free_port()
    board = program.TensorBoard()
    board.configure(
        argv=[
            "tensorboard",
            "--logdir", str(logdir),
            "--host", "127.0.0.1",
            "--port", str(port),
            "--reload_interval", "5",
            "--samples_per_plugin", "images=1000",
        ]
    )  # fmt: skip
    url = board.launch()
    console.print(f"TensorBoard for {run}: {url}  (Ctrl-C stops it)", soft_wrap=True)
    console.file.flush()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="a checkpoint for other tools (a MONAI bundle)")
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("checkpoint", help="a checkpoint file or a packaged model's name")
    p.add_argument("out", type=Path, help="the bundle folder to create")
    p.add_argument("--source", default=None, help="input contrast (default: the model's)")
    p.add_argument("--target", default=None, help="output contrast (default: the model's)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("view", help="watch a run in the browser (TensorBoard, loopback only)")
    p.add_argument("run", type=Path, help="a run directory")
    p.add_argument("--port", type=int, default=None, help="default: a free port")
    p.set_defaults(func=cmd_view)
