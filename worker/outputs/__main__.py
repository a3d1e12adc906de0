"""`python -m worker.outputs --output-id N --attempt A`: the output's child process."""

import sys

from worker.outputs.child import main

if __name__ == "__main__":
    sys.exit(main())
