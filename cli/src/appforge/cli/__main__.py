"""`python -m appforge.cli`: the same as the `appforge` command."""

from appforge.cli import main

raise SystemExit(main())
