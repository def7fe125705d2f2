"""``python cli.py ...`` in a checkout runs the same app as the installed ``qcli`` command."""

from quantcli.cli import app, main

__all__ = ["app"]

if __name__ == "__main__":
    main()
