import sys

from parla.cli import main

sys.exit(main())
