"""`python -m data_platform.commands COMMAND …`, the same as the `data-platform` script."""

from data_platform.commands import main

raise SystemExit(main())
