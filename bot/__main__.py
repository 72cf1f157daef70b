"""`python -m bot` is `flywheel`."""

from bot.cli import main

raise SystemExit(main())
