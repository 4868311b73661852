import sys

from textvae.cli import main

sys.exit(main())
