"""`python -m leadhook`: the command line (as the `leadhook` console script)."""

from leadhook.cli import main

if __name__ == "__main__":
    main()
