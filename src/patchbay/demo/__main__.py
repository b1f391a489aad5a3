"""Run the patchbay demo MCP server over stdio: ``python -m patchbay.demo``."""

from patchbay.demo import main

if __name__ == "__main__":
    main()
