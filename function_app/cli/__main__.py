"""``python -m function_app.cli``: the `retrain` command line."""

from function_app.cli import main

raise SystemExit(main())
