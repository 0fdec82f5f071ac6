import sys

from mailwright.cli import main

sys.exit(main())
