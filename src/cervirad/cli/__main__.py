"""``python -m cervirad.cli``: the console entry point."""
from . import main

main()
