import sys

from sdbert.cli import main

sys.exit(main())
