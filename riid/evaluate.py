"""Resolution-invariance report (work in progress)."""


def add_eval_arguments(parser) -> None:
    parser.add_argument("--checkpoint", default=None)


def run_eval_cli(args) -> None:
    raise NotImplementedError("riid eval is being written")
