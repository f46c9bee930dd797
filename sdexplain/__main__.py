"""`python -m sdexplain …`: the same command line as `sdexplain` (see sdexplain.cli)."""

from sdexplain.cli import main

raise SystemExit(main())
