"""``medcl annotate``: scribble, train and review in the browser (localhost)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("annotate", help="scribble, train and review in the browser (localhost)")
    p.add_argument("dataset", help="dataset folder (nnU-Net or MSCMR layout, or images alone)")
    p.add_argument("--run", help="run folder: its predictions are shown, rounds trained from "
                   "the page go into RUN/annotate_rounds/")
    p.add_argument("--labels", help="label definition JSON (default: DATASET/dataset.json)")
    p.add_argument("--train-config", help="JSON training options of rounds started from the "
                   "page (default: the run's config.json)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default: 8765; 0: a free one); "
                   "a port in use is an error (exit 2): the page's address stays the one asked for")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medcl.extras import require

    for module in ("fastapi", "uvicorn"):
        require(module, extra="annotate", feature="medcl annotate")
    from medcl.annotate.server import listening_socket, open_session, serve

    with listening_socket(args.host, args.port) as sock:  # a taken port: before any work
        session = open_session(args.dataset, run=args.run, labels=args.labels,
                               train_config=args.train_config)
        print(f"medcl annotate: http://{args.host}:{sock.getsockname()[1]}/ (Ctrl+C to stop)",
              flush=True)
        serve(session, sock, host=args.host)
    return 0
