import sys

from worker.forkserver.server import main

sys.exit(main())
