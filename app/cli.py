"""Command line of the app: `influence app ...` (or `python -m influence_app ...`).

    influence app --report DIR                         # a folder written by `influence report` / `influence demo`
    influence app                                      # the digits demo
    influence app --demo text --port 7861
    influence app --index FOLDER --factory module:function [--weights FILE] --train DATA --eval DATA [--report DIR]

Binds 127.0.0.1 unless --host says otherwise (and warns when it does); never creates a
share link (GRADIO_SHARE is refused); caps uploads (--max-upload) and decoded image size;
sends no analytics and fetches nothing from the internet (offline Hugging Face settings).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
import time
from pathlib import Path

OFFLINE = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
for _key, _value in OFFLINE.items():  # before gradio, datasets or transformers is imported
    os.environ.setdefault(_key, _value)

MAX_IMAGE_PIXELS = 4096 * 4096  # PIL refuses to decode images over twice this (decompression bombs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from influence_app.demo import DEMOS

    source = parser.add_argument_group("what to open (default: the digits demo)")
    source.add_argument("--report", help="a report folder written by `influence report` or `influence demo`: opens its "
                                         "model, index and eval data with the Regression tab, nothing else to pass; "
                                         "with --index or --demo, adds the Regression tab if the report was computed "
                                         "on that model and eval data")
    source.add_argument("--demo", choices=DEMOS, help="a built-in offline demo (default digits)")
    source.add_argument("--index", help="an index folder written by Attributor(..., cache_dir=FOLDER).fit()")
    source.add_argument("--factory", help="module:function returning the model (or a dict, see app/sources.py)")
    source.add_argument("--weights", help="model weights (.safetensors, or a torch state dict)")
    source.add_argument("--train", help="training data the index was built on (save_to_disk folder, parquet, csv, "
                                        "json)")
    source.add_argument("--eval", help="evaluation data whose predictions are browsed")
    source.add_argument("--modality", default="auto", choices=["auto", "image", "text", "table"],
                        help="how an example is shown (default auto: from the report, the factory "
                             "or the data)")
    source.add_argument("--input-column", default="input",
                        help="column of --train/--eval holding each example's model input "
                             "(default input)")
    source.add_argument("--label-column", default="label",
                        help="column of --train/--eval holding the label (default label)")
    source.add_argument("--flags", help="verdicts file (default: beside the index, or in the report folder)")
    source.add_argument("--cache", help="cache folder of the demos (default: $INFLUENCE_APP_CACHE or "
                                        "~/.cache/influence-debugger/app)")
    serve = parser.add_argument_group("serving")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    serve.add_argument("--max-upload", default="10mb", type=upload_size,
                       help="largest uploaded file, e.g. 500kb, 10mb (default 10mb); larger uploads are refused")
    serve.add_argument("--k", type=int, default=8,
                       help="training examples per side in a trace (default 8)")
    serve.add_argument("--max-bad", type=int, default=300,
                       help="worst wrong predictions the Review and Groups tabs can rank on "
                            "(default 300)")


def upload_size(text: str) -> str:
    """`--max-upload`: a size such as 500kb, 10mb, 1gb (as gradio's max_file_size reads it)."""
    if not re.fullmatch(r"[1-9]\d*\s*(b|kb|mb|gb)", text.strip().lower()):
        raise argparse.ArgumentTypeError(f"expected a size such as 500kb or 10mb, got {text!r}")
    return text.strip().lower()


def upload_bytes(size: str) -> int:
    """The number of bytes of a `--max-upload` size ("500kb" -> 512000)."""
    number, unit = re.fullmatch(r"(\d+)\s*(b|kb|mb|gb)", size).groups()
    return int(number) * 1024 ** ("b", "kb", "mb", "gb").index(unit)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_notes(host: str) -> list[str]:
    """What the server prints about who can reach it, and about refused share links."""
    notes = []
    if is_loopback(host):
        notes.append(f"bound to {host}: reachable from this machine only (--host to change)")
    else:
        notes.append(f"WARNING: bound to {host}: anyone who can reach this machine on the network can open the "
                     "app and the training data it shows; there is no login. Use --host 127.0.0.1 (the default) "
                     "unless you mean it")
    if os.environ.get("GRADIO_SHARE", "").strip().lower() not in ("", "0", "false"):
        notes.append("GRADIO_SHARE is ignored: this app never creates a public share link")
    return notes


def open_setup(args: argparse.Namespace):
    """The `Setup` the options name: a report folder, an index with its model and data, or a demo."""
    from influence.errors import InvalidArgumentError

    if args.index:
        missing = [f"--{name}" for name in ("factory", "train", "eval") if not getattr(args, name)]
        if missing:
            raise InvalidArgumentError(f"--index needs {', '.join(missing)} (or open a report folder alone: "
                                       "--report DIR)")
        from influence_app.sources import open_index

        return open_index(args.index, args.factory, args.train, args.eval, weights=args.weights,
                          modality=args.modality, input_column=args.input_column, label_column=args.label_column,
                          flags=args.flags, report=args.report)
    if args.report and not args.demo:
        from influence_app.sources import open_report

        return open_report(args.report, flags=args.flags, modality=args.modality)
    from influence_app.demo import load_demo

    setup = load_demo(args.demo or "digits", args.cache)
    if args.flags:
        setup.flags_path = Path(args.flags)
    if args.report:
        from influence_app.sources import attach_report

        attach_report(setup, args.report)
    return setup


def run(args: argparse.Namespace) -> int:
    """Open what `args` names and serve it until interrupted."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    started = time.perf_counter()
    from influence_app.session import Session
    from influence_app.ui import build

    setup = open_setup(args)
    session = Session(setup, max_bad=args.max_bad)
    page = build(session, k=args.k, max_upload_bytes=upload_bytes(args.max_upload))
    page.queue(default_concurrency_limit=4)
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    print(f"influence app: {setup.name}; ready in {time.perf_counter() - started:.1f} s", flush=True)
    for note in exposure_notes(args.host):
        print(f"influence app: {note}", flush=True)
    print(f"influence app: serving on http://{args.host}:{args.port} (Ctrl+C to stop); uploads up to "
          f"{args.max_upload}", flush=True)
    from starlette.middleware import Middleware

    from influence_app.security import LocalFilesOnly

    from influence_app.ui import CSS

    page.launch(css=CSS, server_name=args.host, server_port=args.port, share=False, inbrowser=False,
                quiet=True,
                show_error=True, footer_links=["api"], max_file_size=args.max_upload, enable_monitoring=False,
                ssr_mode=False, mcp_server=False, app_kwargs={"middleware": [Middleware(LocalFilesOnly)]})
    return 0


def main(argv: list[str] | None = None) -> int:
    prog = os.environ.get("INFLUENCE_APP_PROG", "influence app")
    parser = argparse.ArgumentParser(prog=prog, description="Trace bad predictions to training data, review and "
                                                            "flag it, and export the flags for `influence report "
                                                            "--flags`.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    from influence.errors import InfluenceError

    try:
        return run(args)
    except InfluenceError as error:
        print(f"influence app: error: {error}", file=sys.stderr)
        return 2
