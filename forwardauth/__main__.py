import sys

from forwardauth.cli import main

sys.exit(main())
