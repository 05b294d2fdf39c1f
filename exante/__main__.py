from exante.cli import main

raise SystemExit(main())
