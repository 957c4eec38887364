import sys
from otatool.cli import main

sys.exit(main())
