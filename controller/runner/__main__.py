"""`python -m controller.runner` (and `python -m agenttask_runner` with the zipapp on sys.path)."""

from .main import main

if __name__ == "__main__":
    raise SystemExit(main())
