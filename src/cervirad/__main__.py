"""``python -m cervirad`` (and ``torchrun ... -m cervirad train-seg ...``): the ``cervirad`` command."""
from .cli import main

if __name__ == "__main__":
    main()
