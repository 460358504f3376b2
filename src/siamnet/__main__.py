"""`python -m siamnet` (and `torchrun -m siamnet`) runs the command line."""

from siamnet.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
